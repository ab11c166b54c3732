"""Class-agnostic mask generators (CorrCLIP's regions), one interface: images → region label maps.

A generator takes CLIP-normalised images ``[B, 3, H, W]`` (with CLIP's mean and std to undo the normalisation) and
returns label maps ``[B, H, W]`` int64: 0 is the "unsegmented" region, 1.. the masks, painted as the authors' code
paints SAM 2's (``corrclip_segmentor.py``'s ``generate_mask``: sorted by area, ascending, each drawn over the
previous, so a larger mask overwrites a smaller one). :func:`uint8_labels` takes an RGB uint8 ``[H, W, 3]`` array.

- ``"sam2"``: SAM 2's automatic mask generator through the ``sam2`` package (``sam2.build_sam.build_sam2`` +
  ``SAM2AutomaticMaskGenerator``) with the authors' settings (``sam2_hiera_l.yaml`` / ``sam2_hiera_large.pt``,
  ``points_per_side=8``, ``pred_iou_thresh=0.4``, ``stability_score_thresh=0.4``, ``multimask_output=False``,
  ``apply_postprocessing=False``), one image at a time (its generator takes one image);
- ``"tiny"``: a deterministic stand-in in pure torch for tests and the smoke profile (a ``grid x grid`` layout of
  cells split by quantised brightness; the darkest level is unsegmented), batched.

:func:`cached_labels` keeps a generator's label map per image on disk (``<cache root>/masks/``, key: the image's
content digest, the generator's identity and settings), so sweeps do not regenerate SAM 2's masks.
"""

from __future__ import annotations

import hashlib
import importlib.util
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from alignclip.errors import ConfigError, WeightsNotFoundError
from alignclip.io.cache import cache_root
from alignclip.io.files import atomic_write

__all__ = [
    "MASK_GENERATORS",
    "SAM2_CHECKPOINT_URL",
    "Sam2MaskGenerator",
    "TinyMaskGenerator",
    "cached_labels",
    "create_mask_generator",
    "paint_masks",
    "to_uint8",
    "uint8_labels",
]

MASK_GENERATORS = ("sam2", "tiny")
#: Where SAM 2's Hiera-L checkpoint of the authors' code (``sam2_hiera_large.pt``) is published.
SAM2_CHECKPOINT_URL = "https://dl.fbaipublicfiles.com/segment_anything_2/072824/sam2_hiera_large.pt"


def to_uint8(images: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """CLIP-normalised ``[B, 3, H, W]`` → 0-255 pixels (float, rounded and clipped)."""
    m = torch.as_tensor(mean, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
    s = torch.as_tensor(std, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
    return ((images * s + m) * 255.0).round().clamp(0, 255)


def paint_masks(masks: torch.Tensor) -> torch.Tensor:
    """``[M, H, W]`` bool masks → ``[H, W]`` int64 labels as their ``generate_mask`` paints SAM 2's: sorted by area
    ascending, mask i (1-based rank) drawn over the previous ones; 0 where no mask lies."""
    if masks.shape[0] == 0:
        return torch.zeros(masks.shape[1:], dtype=torch.int64, device=masks.device)
    area = masks.flatten(1).sum(1)
    order = torch.sort(area, stable=True).indices  # python's sorted() is stable too
    ranked = masks[order]
    ids = torch.arange(1, len(order) + 1, device=masks.device).view(-1, 1, 1)
    return (ranked.long() * ids).amax(dim=0)  # the largest rank covering a pixel is the last drawn there


class TinyMaskGenerator:
    """Deterministic stand-in regions: ``grid x grid`` cells of the image, each split by brightness level.

    Brightness ``(R + G + B) / 3`` of the 0-255 pixels falls in ``levels`` equal bins; pixels of the darkest bin
    are unsegmented (0), the others take ``1 + cell * (levels - 1) + (bin - 1)``.
    """

    identity = "tiny"
    cacheable = False

    def __init__(self, grid: int = 4, levels: int = 3):
        self.grid, self.levels = grid, levels
        self.settings = dict(grid=grid, levels=levels)

    def __call__(self, images: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
        pixels = to_uint8(images.float(), mean, std)
        return self.from_pixels(pixels)

    def from_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        """``[B, 3, H, W]`` 0-255 pixels → ``[B, H, W]`` labels."""
        b, _, h, w = pixels.shape
        level = torch.clamp((pixels.mean(1) * self.levels / 256.0).floor().long(), 0, self.levels - 1)
        rows = torch.arange(h, device=pixels.device) * self.grid // h
        cols = torch.arange(w, device=pixels.device) * self.grid // w
        cell = rows[:, None] * self.grid + cols[None, :]
        labels = 1 + cell * (self.levels - 1) + (level - 1)
        return torch.where(level == 0, torch.zeros_like(labels), labels)


class Sam2MaskGenerator:
    """SAM 2's automatic mask generator (the ``sam2`` package) with the authors' settings; see the module docstring.

    Args:
        config: SAM 2's config name as ``build_sam2`` takes it (``configs/sam2/sam2_hiera_l.yaml``).
        checkpoint: the local checkpoint file (``sam2_hiera_large.pt``).
        device: where SAM 2 runs.
        points_per_side, pred_iou_thresh, stability_score_thresh: the generator's settings (theirs: 8, 0.4, 0.4).
    """

    cacheable = True

    def __init__(
        self,
        config: str,
        checkpoint: str,
        device: torch.device | str = "cpu",
        points_per_side: int = 8,
        pred_iou_thresh: float = 0.4,
        stability_score_thresh: float = 0.4,
    ):
        if importlib.util.find_spec("sam2") is None:
            raise ConfigError(
                "corrclip_mask_generator='sam2' needs the sam2 package: pip install sam2 "
                "(or corrclip_mask_generator='tiny' for the deterministic stand-in)"
            )
        path = Path(checkpoint).expanduser()
        if not path.is_file():
            raise WeightsNotFoundError(
                f"SAM 2 checkpoint {checkpoint} not found: download {SAM2_CHECKPOINT_URL} and pass its path as "
                f"corrclip_sam2_checkpoint (config {config})"
            )
        from sam2.automatic_mask_generator import SAM2AutomaticMaskGenerator
        from sam2.build_sam import build_sam2

        self.device = torch.device(device)
        model = build_sam2(config, str(path), device=str(self.device), apply_postprocessing=False)
        self.generator = SAM2AutomaticMaskGenerator(
            model=model,
            points_per_side=points_per_side,
            pred_iou_thresh=pred_iou_thresh,
            stability_score_thresh=stability_score_thresh,
            multimask_output=False,
        )
        self.identity = f"sam2:{config}:{path.name}:{path.stat().st_size}"
        self.settings = dict(
            points_per_side=points_per_side,
            pred_iou_thresh=pred_iou_thresh,
            stability_score_thresh=stability_score_thresh,
        )

    def __call__(self, images: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
        pixels = to_uint8(images.float(), mean, std).permute(0, 2, 3, 1).to(torch.uint8).cpu().numpy()
        return torch.stack([self.label_map(p) for p in pixels]).to(images.device)  # SAM 2 takes one image

    def label_map(self, image: np.ndarray) -> torch.Tensor:
        """``[H, W, 3]`` uint8 RGB → ``[H, W]`` int64 labels (on the CPU)."""
        autocast = (
            torch.autocast("cuda", dtype=torch.float16)
            if self.device.type == "cuda"
            else torch.autocast("cpu", enabled=False)
        )
        with torch.inference_mode(), autocast:
            anns = self.generator.generate(image)
        if not anns:
            return torch.zeros(image.shape[:2], dtype=torch.int64)
        return paint_masks(torch.as_tensor(np.stack([a["segmentation"] for a in anns])).bool())


def create_mask_generator(config, device: torch.device | str = "cpu"):
    """The generator ``config.corrclip_mask_generator`` names, with the config's settings."""
    name = config.corrclip_mask_generator
    if name == "tiny":
        return TinyMaskGenerator()
    if name == "sam2":
        return Sam2MaskGenerator(
            config.corrclip_sam2_config,
            config.corrclip_sam2_checkpoint,
            device,
            config.corrclip_points_per_side,
            config.corrclip_pred_iou_thresh,
            config.corrclip_stability_score_thresh,
        )
    raise ConfigError(f"corrclip_mask_generator={name!r} is not valid; choose one of {', '.join(MASK_GENERATORS)}")


def uint8_labels(generator, image: np.ndarray) -> torch.Tensor:
    """Labels ``[H, W]`` of an RGB uint8 ``[H, W, 3]`` image (mean 0, std 1/255: the pixels as they are)."""
    x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float() / 255.0
    return generator(x, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))[0]


def _cache_key(generator, pixels: torch.Tensor) -> str:
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(pixels.to(torch.uint8).cpu().numpy()).tobytes())
    h.update(repr((tuple(pixels.shape), generator.identity, sorted(generator.settings.items()))).encode())
    return h.hexdigest()


def cached_labels(
    generator, image: torch.Tensor, mean: Sequence[float], std: Sequence[float], use_cache: bool = True
) -> torch.Tensor:
    """``generator(image)[0]`` for one CLIP-normalised image ``[1, 3, H, W]``, read from / written to the disk cache
    (``<cache root>/masks/<digest>.npy``, atomic writes) when ``use_cache`` and the generator is cacheable."""
    if not (use_cache and getattr(generator, "cacheable", False)):
        return generator(image, mean, std)[0]
    key = _cache_key(generator, to_uint8(image.float(), mean, std))
    path = cache_root() / "masks" / f"{key}.npy"
    try:
        return torch.from_numpy(np.load(path)).to(image.device)
    except (OSError, ValueError):  # no entry yet (or an unreadable one): generate
        pass
    labels = generator(image, mean, std)[0]
    try:
        atomic_write(path, lambda tmp: np.save(tmp, labels.cpu().numpy()), overwrite=True)
    except OSError:  # a read-only cache only costs regenerating next time
        pass
    return labels
