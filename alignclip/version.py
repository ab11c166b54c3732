"""The package version (one place; the root package and RESULT.json provenance read it)."""

__all__ = ["__version__"]

__version__ = "0.1.0"
