"""Exception types of the package.

Every public function raises one of these (never a bare ``assert``). Each message says what was
expected, where the code looked, and the exact fix, in one line.
"""

from __future__ import annotations

__all__ = [
    "AlignCLIPError",
    "CheckpointError",
    "ConfigError",
    "DatasetError",
    "DatasetNotFoundError",
    "InputError",
    "WeightsNotFoundError",
]


class AlignCLIPError(Exception):
    """Base class of every error raised on purpose by alignclip."""


class ConfigError(AlignCLIPError, ValueError):
    """A configuration value, preset or name is invalid (the message lists valid choices)."""


class InputError(AlignCLIPError, ValueError):
    """User input (an image, class names, a tensor shape) cannot be used as given."""


class WeightsNotFoundError(AlignCLIPError, FileNotFoundError):
    """Pretrained weights are not available offline (the message says how to provide them)."""


class CheckpointError(AlignCLIPError, ValueError):
    """A checkpoint file exists but does not match the expected format or keys."""


class DatasetNotFoundError(AlignCLIPError, FileNotFoundError):
    """A dataset root is missing or does not have the expected layout."""


class DatasetError(AlignCLIPError, ValueError):
    """A dataset is present but its content is wrong (counts, sizes, label values)."""
