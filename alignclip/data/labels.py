"""Label encodings: the raw datasets' colour palettes, colour -> class-id conversion, mmseg's ``reduce_zero_label``.

The raw releases of Potsdam, Vaihingen, iSAID and UAVid store labels as RGB colours; the
converters turn them into single-channel class ids with :func:`rgb_to_index`. Colours are given
in RGB order (mmsegmentation's ISPRS converter lists them in BGR because it reads with OpenCV).
"""

from __future__ import annotations

import numpy as np

from alignclip.errors import InputError

__all__ = ["ISAID_PALETTE", "ISPRS_PALETTE", "UAVID_PALETTE", "reduce_zero_label", "rgb_to_index"]

#: ISPRS Potsdam/Vaihingen colours -> mmseg ids (0 = boundary/ignored, 1-6 classes).
ISPRS_PALETTE: dict[tuple[int, int, int], int] = {
    (0, 0, 0): 0,  # eroded boundary (black), ignored after reduce_zero_label
    (255, 255, 255): 1,  # impervious surfaces
    (0, 0, 255): 2,  # building
    (0, 255, 255): 3,  # low vegetation
    (0, 255, 0): 4,  # tree
    (255, 255, 0): 5,  # car
    (255, 0, 0): 6,  # clutter/background
}

#: iSAID semantic-mask colours -> ids 0-15 (order of SegEarth-OV's cls_iSAID.txt).
ISAID_PALETTE: dict[tuple[int, int, int], int] = {
    (0, 0, 0): 0,  # background
    (0, 0, 63): 1,  # ship
    (0, 63, 63): 2,  # storage tank
    (0, 63, 0): 3,  # baseball diamond
    (0, 63, 127): 4,  # tennis court
    (0, 63, 191): 5,  # basketball court
    (0, 63, 255): 6,  # ground track field
    (0, 127, 63): 7,  # bridge
    (0, 127, 127): 8,  # large vehicle
    (0, 0, 127): 9,  # small vehicle
    (0, 0, 191): 10,  # helicopter
    (0, 0, 255): 11,  # swimming pool
    (0, 191, 127): 12,  # roundabout
    (0, 127, 191): 13,  # soccer ball field
    (0, 127, 255): 14,  # plane
    (0, 100, 155): 15,  # harbor
}

#: UAVid colours -> ids; moving car (64, 0, 128) is merged into car (3) as in SegEarth-OV.
UAVID_PALETTE: dict[tuple[int, int, int], int] = {
    (0, 0, 0): 0,  # clutter (background)
    (128, 0, 0): 1,  # building
    (128, 64, 128): 2,  # road
    (192, 0, 192): 3,  # static car
    (0, 128, 0): 4,  # tree
    (128, 128, 0): 5,  # low vegetation
    (64, 64, 0): 6,  # human
    (64, 0, 128): 3,  # moving car -> car
}


def _rgb_keys(rgb: np.ndarray) -> np.ndarray:
    """Packs [..., 3] uint8 colours into int32 keys r<<16 | g<<8 | b."""
    rgb = rgb.astype(np.int32, copy=False)
    return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]


def rgb_to_index(rgb: np.ndarray, palette: dict[tuple[int, int, int], int], default: int = 0) -> tuple[np.ndarray, int]:
    """Maps an RGB colour label to class ids by exact colour match.

    Args:
        rgb: colour label [H, W, 3] uint8, RGB order.
        palette: colour (r, g, b) -> class id (0-255).
        default: id given to colours not in the palette (mmseg's converters use 0).

    Returns:
        ``(ids [H, W] uint8, number of pixels whose colour was not in the palette)``.
    """
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise InputError(
            f"rgb_to_index expects a [H, W, 3] uint8 colour label, got shape "
            f"{rgb.shape} of {rgb.dtype}; read it with alignclip.io.images.read_image"
        )
    colours = np.array(list(palette), dtype=np.int32).reshape(-1, 3)
    ids = np.array(list(palette.values()), dtype=np.int64)
    keys = _rgb_keys(colours)
    order = np.argsort(keys)
    keys, ids = keys[order], ids[order]
    flat = _rgb_keys(rgb)
    pos = np.clip(np.searchsorted(keys, flat), 0, len(keys) - 1)
    known = keys[pos] == flat
    out = np.where(known, ids[pos], default).astype(np.uint8)
    return out, int(known.size - np.count_nonzero(known))


def reduce_zero_label(label: np.ndarray) -> np.ndarray:
    """Shift labels down by one, mapping 0 to ignore (mmseg's ``reduce_zero_label``).

    0 -> 255, then every label - 1, then 254 -> 255 (so 255 stays 255). Works on a copy; the
    arithmetic is done in int32 so uint8 inputs do not wrap.

    Args:
        label: Integer label map of any shape, e.g. [H, W].

    Returns:
        A new array with the same shape and dtype as ``label``.
    """
    arr = np.asarray(label)
    if not np.issubdtype(arr.dtype, np.integer):
        raise InputError(
            f"reduce_zero_label expects an integer label map, got dtype {arr.dtype}; "
            "load labels as uint8/int arrays (never resample labels with interpolation)"
        )
    out = arr.astype(np.int32, copy=True)
    out[out == 0] = 255
    out -= 1
    out[out == 254] = 255
    return out.astype(arr.dtype)
