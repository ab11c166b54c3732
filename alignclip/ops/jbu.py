"""Tensor operations of the JBU upsampler: tiled adaptive convolution, tiled neighbour dot products
and the factored form of upsampled features (pure tensor functions, CPU and GPU alike).

Both per-pixel operations of a JBU step read a ``(2r+1)**2`` neighbourhood of every pixel. Instead
of unfolding ``[B, C, taps, H, W]`` (13.8 GB for one 224² window of 512 channels) or looping over
the taps, the output is cut into ``T x T`` tiles whose padded input patches ``[(T+2r)**2, C]`` are
overlapping views of the input (no copy), and each tile becomes one dense matrix product, run in
batched matmuls over chunks of tiles of bounded size.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from alignclip.errors import InputError

__all__ = [
    "CHUNK_BYTES",
    "TILE",
    "ChunkFn",
    "FactoredFeatures",
    "adaptive_conv",
    "adaptive_conv_reference",
    "bicubic_resize",
    "cosine_logits",
    "neighbour_dot_products",
    "neighbour_dot_products_reference",
]

TILE = 8  # output tile side (fastest of 4/8/16 on a 2-core AVX-512 CPU)
CHUNK_BYTES = 16 * 2**20  # patches + weights of one batch of tiles (16 MiB beat 64 and 256)


def _tap_view(dense: Tensor, tile: int, diameter: int, grid: tuple[int, int] | None = None) -> Tensor:
    """The taps of contiguous per-tile matrices ``[n, T*T, P*P]`` as a strided view ``[n, T, T, d, d]``.

    Element ``(ty, tx, i, j)`` is ``dense[:, ty * T + tx, (ty + i) * P + (tx + j)]``, P = T + d - 1: output pixel
    ``(ty, tx)`` of a tile and input pixel ``(ty + i, tx + j)`` of its padded patch. With ``grid = (rows, cols)``
    the n tiles are viewed as ``[rows, cols, ...]``. ``dense`` must be contiguous.
    """
    side = tile + diameter - 1
    per_tile = tile * tile * side * side
    strides = (tile * side * side + side, side * side + 1, side, 1)
    if grid is None:
        return dense.as_strided((dense.shape[0], tile, tile, diameter, diameter), (per_tile, *strides))
    rows, cols = grid
    return dense.as_strided((rows, cols, tile, tile, diameter, diameter), (cols * per_tile, per_tile, *strides))


def _tile_chunks(rows: int, cols: int, max_tiles: int) -> Iterator[tuple[int, int, int, int]]:
    """Split a ``rows x cols`` grid of tiles into rectangles of at most ``max_tiles`` tiles."""
    if cols <= max_tiles:
        step = max(1, max_tiles // cols)
        for r0 in range(0, rows, step):
            yield r0, min(rows, r0 + step), 0, cols
        return
    for r0 in range(rows):
        for c0 in range(0, cols, max_tiles):
            yield r0, r0 + 1, c0, min(cols, c0 + max_tiles)


ChunkFn = Callable[[int, int, int, int, int, Tensor], Tensor]


def _tiled(
    x: Tensor, radius: int, height: int, width: int, out_channels: int, tile: int, chunk_bytes: int, fn: ChunkFn
) -> Tensor:
    """Run ``fn`` on chunks of tiles of the padded input ``x`` [B, C, H+2r, W+2r].

    ``fn(b, r0, r1, c0, c1, patches)`` gets the patches ``[n, P*P, C]`` of tiles ``r0:r1, c0:c1``
    of image ``b`` (n tiles, row-major) and returns their outputs ``[n, T*T, out_channels]``.

    Returns:
        ``[B, H, W, out_channels]`` (contiguous), dtype of ``x``.
    """
    batch, channels = x.shape[:2]
    rows, cols = -(-height // tile), -(-width // tile)
    hq, wq = rows * tile, cols * tile
    if (hq, wq) != (height, width):  # zero-pad to whole tiles; the padding is cropped at the end
        xq = x.new_zeros(batch, hq + 2 * radius, wq + 2 * radius, channels)
        xq[:, : x.shape[2], : x.shape[3]] = x.permute(0, 2, 3, 1)
        x = xq.permute(0, 3, 1, 2)
    side = tile + 2 * radius
    sb, sc, sh, sw = x.stride()
    patches = x.as_strided(  # [B, rows, cols, P, P, C]: overlapping views, no copy
        (batch, rows, cols, side, side, channels), (sb, tile * sh, tile * sw, sh, sw, sc)
    )
    out = x.new_empty(batch, hq, wq, out_channels)
    out_tiles = out.view(batch, rows, tile, cols, tile, out_channels).permute(0, 1, 3, 2, 4, 5)
    per_tile = x.element_size() * side * side * (channels + tile * tile)  # patch + its [T*T, P*P] matrix
    for b in range(batch):
        for r0, r1, c0, c1 in _tile_chunks(rows, cols, max(1, chunk_bytes // per_tile)):
            n = (r1 - r0) * (c1 - c0)
            block = patches[b, r0:r1, c0:c1]
            if sc == 1:  # channels_last: each patch row is one contiguous run
                xp = block.reshape(n, side * side, channels)
            else:  # NCHW: copy with contiguous patch rows; bmm takes the transposed view
                xp = block.permute(0, 1, 4, 2, 3).reshape(n, channels, side * side).mT
            res = fn(b, r0, r1, c0, c1, xp)
            out_tiles[b, r0:r1, c0:c1] = res.view(r1 - r0, c1 - c0, tile, tile, out_channels)
    if (hq, wq) != (height, width):
        out = out[:, :height, :width].contiguous()
    return out


def _check_adaptive_conv_shapes(x: Tensor, kernel: Tensor) -> int:
    """Validate :func:`adaptive_conv` inputs and return the kernel radius."""
    diameter = math.isqrt(kernel.shape[1]) if kernel.dim() == 4 else 0
    if x.dim() != 4 or diameter % 2 == 0 or diameter * diameter != kernel.shape[1]:
        raise InputError(
            f"adaptive_conv expects x [B, C, H+2r, W+2r] and kernel [B, (2r+1)**2, H, W] (an odd "
            f"square of taps), got {tuple(x.shape)} and {tuple(kernel.shape)}; pass 4-D tensors"
        )
    radius = diameter // 2
    b, _, h, w = kernel.shape
    expected = (b, x.shape[1], h + 2 * radius, w + 2 * radius)
    if tuple(x.shape) != expected:
        raise InputError(
            f"adaptive_conv x has shape {tuple(x.shape)} but kernel {tuple(kernel.shape)} needs "
            f"{expected}; pad x by the radius {radius} on every side"
        )
    return radius


def adaptive_conv(x: Tensor, kernel: Tensor, *, tile: int = TILE, chunk_bytes: int = CHUNK_BYTES) -> Tensor:
    """Per-pixel adaptive convolution: one kernel per output pixel, shared by all channels.

    ``out[b, c, y, x] = sum_{i,j} x[b, c, y + i, x + j] * kernel[b, i * d + j, y, x]``, d = 2r + 1.
    Each output tile's taps are scattered into a dense weight matrix ``[T*T, (T+2r)**2]`` that
    multiplies the tile's input patch ``[(T+2r)**2, C]``.

    Args:
        x: Padded input [B, C, H+2r, W+2r] (any memory format; ``channels_last`` is fastest).
        kernel: Per-pixel kernels [B, (2r+1)**2, H, W], taps in row-major ``(i, j)`` order.
        tile: Output tile side T; H and W need not be multiples of T (zero padding, then crop).
        chunk_bytes: Memory budget of one batch of tiles.

    Returns:
        Filtered features [B, C, H, W] in ``channels_last`` memory format, dtype of ``x``.
    """
    radius = _check_adaptive_conv_shapes(x, kernel)
    _, taps, height, width = kernel.shape
    channels, side = x.shape[1], tile + 2 * radius
    kernel = kernel.to(x.dtype).permute(0, 2, 3, 1)  # [B, H, W, taps]
    diameter = 2 * radius + 1

    def apply(b: int, r0: int, r1: int, c0: int, c1: int, xp: Tensor) -> Tensor:
        n, rows, cols = xp.shape[0], r1 - r0, c1 - c0
        k = kernel[b, r0 * tile : r1 * tile, c0 * tile : c1 * tile]
        if k.shape[:2] != (rows * tile, cols * tile):  # last tiles: zero taps outside
            k = F.pad(k, (0, 0, 0, cols * tile - k.shape[1], 0, rows * tile - k.shape[0]))
        k = k.view(rows, tile, cols, tile, diameter, diameter).permute(0, 2, 1, 3, 4, 5)
        weights = xp.new_zeros(n, tile * tile, side * side)
        _tap_view(weights, tile, diameter, (rows, cols)).copy_(k)  # one strided copy, no index
        return torch.bmm(weights, xp)  # [n, T*T, C]

    out = _tiled(x, radius, height, width, channels, tile, chunk_bytes, apply)
    return out.permute(0, 3, 1, 2)


def adaptive_conv_reference(x: Tensor, kernel: Tensor) -> Tensor:
    """Tap-loop reference of :func:`adaptive_conv` (small inputs, tests only): [B, C, H, W]."""
    diameter = 2 * _check_adaptive_conv_shapes(x, kernel) + 1
    height, width = kernel.shape[2:]
    out = x.new_zeros(x.shape[0], x.shape[1], height, width)
    for t in range(diameter * diameter):
        i, j = divmod(t, diameter)
        out.addcmul_(x[:, :, i : i + height, j : j + width], kernel[:, t : t + 1])
    return out


def neighbour_dot_products(keys: Tensor, radius: int, *, tile: int = TILE, chunk_bytes: int = CHUNK_BYTES) -> Tensor:
    """Dot products of each pixel's key with its reflect-padded ``(2r+1)**2`` neighbours.

    ``out[b, y, x, i * d + j] = <keys[b, :, y, x], padded[b, :, y + i, x + j]>``: per tile, the
    centre keys ``[T*T, K]`` times the patch ``[(T+2r)**2, K]``, then the taps are gathered.

    Args:
        keys: Range keys [B, K, H, W] (H, W > r for reflect padding).
        radius: Neighbourhood radius r.
        tile: Output tile side T.
        chunk_bytes: Memory budget of one batch of tiles.

    Returns:
        Logits [B, H, W, (2r+1)**2], taps in row-major ``(i, j)`` order.
    """
    diameter = 2 * radius + 1
    height, width = keys.shape[-2:]
    padded = F.pad(keys, [radius] * 4, mode="reflect").contiguous(memory_format=torch.channels_last)
    side = tile + 2 * radius
    t = torch.arange(tile, device=keys.device)
    centres = ((t[:, None] + radius) * side + t[None, :] + radius).reshape(-1)  # [T*T]

    def dots(b: int, r0: int, r1: int, c0: int, c1: int, xp: Tensor) -> Tensor:
        full = torch.bmm(xp[:, centres], xp.mT)  # [n, T*T, P*P]
        return _tap_view(full, tile, diameter).reshape(xp.shape[0], tile * tile, diameter * diameter)

    return _tiled(padded, radius, height, width, diameter * diameter, tile, chunk_bytes, dots)


def neighbour_dot_products_reference(keys: Tensor, radius: int) -> Tensor:
    """Tap-loop reference of :func:`neighbour_dot_products` (tests only): [B, H, W, taps]."""
    diameter = 2 * radius + 1
    batch, _, height, width = keys.shape
    padded = F.pad(keys, [radius] * 4, mode="reflect")
    out = keys.new_empty(batch, height, width, diameter * diameter)
    for t in range(diameter * diameter):
        i, j = divmod(t, diameter)
        out[..., t] = (padded[:, :, i : i + height, j : j + width] * keys).sum(1)
    return out


@functools.lru_cache(maxsize=32)
def _bicubic_matrix(in_size: int, out_size: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    """``[out, in]`` matrix of 1-D bicubic resizing as ``F.interpolate(mode="bicubic", align_corners=False)``.

    Source coordinate ``(o + 0.5) * in / out - 0.5`` (not clamped), Keys' cubic with A = -0.75, the four taps'
    indices clamped to the border (their weights add up there).
    """
    a = -0.75
    src = (torch.arange(out_size, dtype=torch.float64) + 0.5) * (in_size / out_size) - 0.5
    base = torch.floor(src)
    t = src - base
    weights = torch.stack(
        [  # taps at base - 1, base, base + 1, base + 2
            ((a * (t + 1) - 5 * a) * (t + 1) + 8 * a) * (t + 1) - 4 * a,
            ((a + 2) * t - (a + 3)) * t * t + 1,
            ((a + 2) * (1 - t) - (a + 3)) * (1 - t) * (1 - t) + 1,
            ((a * (2 - t) - 5 * a) * (2 - t) + 8 * a) * (2 - t) - 4 * a,
        ],
        dim=1,
    )
    index = (base.long()[:, None] + torch.arange(-1, 3)).clamp(0, in_size - 1)
    matrix = torch.zeros(out_size, in_size, dtype=torch.float64)
    matrix.scatter_add_(1, index, weights)
    return matrix.to(device=device, dtype=dtype)


def _reflect_rows(matrix: Tensor, pad: int) -> Tensor:
    """Rows ``reflect(-pad .. out + pad - 1)`` of an ``[out, in]`` matrix: reflect padding of its output."""
    if pad == 0:
        return matrix
    out = matrix.shape[0]
    if pad >= out:
        raise InputError(f"reflect padding {pad} needs more than {pad} output pixels, got {out}; resize to more")
    i = torch.arange(-pad, out + pad, device=matrix.device).abs()
    return matrix[torch.where(i > out - 1, 2 * (out - 1) - i, i)]


def bicubic_resize(x: Tensor, size: tuple[int, int], pad: int = 0) -> Tensor:
    """Bicubic resize of ``x`` [B, C, h, w] to ``size``, then reflect padding by ``pad``, as two matrix products.

    Equal to ``F.pad(F.interpolate(x, size, mode="bicubic", align_corners=False), [pad] * 4, mode="reflect")`` up
    to rounding; on a CPU faster for the JBU's many channels, with no separate padding pass. The FLOPs (dense
    ``[out, in]`` matrices) are counted by FlopCounterMode.

    Returns:
        ``[B, C, H + 2 pad, W + 2 pad]`` in ``channels_last`` memory format.
    """
    batch, channels, height, width = x.shape
    rows = _reflect_rows(_bicubic_matrix(height, size[0], x.device, x.dtype), pad)  # [H + 2p, h]
    cols = _reflect_rows(_bicubic_matrix(width, size[1], x.device, x.dtype), pad)  # [W + 2p, w]
    nhwc = x.permute(0, 2, 3, 1)  # a view for channels_last input
    out = torch.matmul(rows, nhwc.reshape(batch, height, -1))  # [B, H + 2p, w*C]
    out = torch.matmul(cols, out.view(batch, rows.shape[0], width, channels))  # [B, H + 2p, W + 2p, C]
    return out.permute(0, 3, 1, 2)


@dataclass(frozen=True)
class FactoredFeatures:
    """Upsampled features kept as a product: ``dense = operator @ coeffs + bias`` per window.

    The JBU steps are one linear map of the patch features given the guidance (see
    :class:`alignclip.models.upsampler.JBUOne`); when the window has fewer patches P than channels C its
    matrix is cheaper to keep than the ``[C, H, W]`` features it produces. Cosine logits against
    Q text embeddings then need ``[H*W, P] @ [P, P]`` (the squared norms) and ``[H*W, P] @ [P, Q]``
    instead of ``[H*W, P] @ [P, C]`` plus normalising ``[C, H, W]``.

    Attributes:
        operator: ``[B, H*W, P]``, row ``y * W + x`` maps the P patches to pixel (y, x).
        coeffs: ``[B, P, C]`` patch features (the final 1x1 projection already folded in).
        bias: ``[C]`` added to every pixel, or None.
        size: ``(H, W)``.
    """

    operator: Tensor
    coeffs: Tensor
    bias: Tensor | None
    size: tuple[int, int]

    @property
    def shape(self) -> tuple[int, int, int, int]:
        """Shape ``(B, C, H, W)`` of the dense features."""
        return (self.coeffs.shape[0], self.coeffs.shape[2], *self.size)

    def float(self) -> FactoredFeatures:
        """The same features in float32."""
        bias = None if self.bias is None else self.bias.float()
        return FactoredFeatures(self.operator.float(), self.coeffs.float(), bias, self.size)

    def dense(self) -> Tensor:
        """The features ``[B, C, H, W]`` (``channels_last`` memory)."""
        batch, channels, height, width = self.shape
        if self.bias is None:
            out = torch.bmm(self.operator, self.coeffs)  # [B, H*W, C]
        else:
            out = torch.baddbmm(self.bias.view(1, 1, -1), self.operator, self.coeffs)
        return out.view(batch, height, width, channels).permute(0, 3, 1, 2)


def cosine_logits(features: Tensor | FactoredFeatures, text_embeds: Tensor, eps: float = 1e-12) -> Tensor:
    """Cosine similarity of every pixel's feature with every text embedding (Eq. 13's S_up).

    Equals ``einsum('bchw,bqc->bqhw', F.normalize(features, dim=1), text_embeds)``; the text
    embeddings are used as given (normalise them first for a cosine).

    Args:
        features: Dense ``[B, C, H, W]`` or :class:`FactoredFeatures`.
        text_embeds: ``[B, Q, C]``.
        eps: Lower bound of the pixel norms (as ``F.normalize``).

    Returns:
        ``[B, Q, H, W]``.
    """
    if isinstance(features, Tensor):
        return torch.einsum("bchw,bqc->bqhw", F.normalize(features, dim=1, eps=eps), text_embeds)
    op, coeffs, bias = features.operator, features.coeffs, features.bias
    batch, _, height, width = features.shape
    numerator = torch.bmm(op, coeffs @ text_embeds.mT)  # [B, H*W, Q]
    sq_norm = (torch.bmm(op, coeffs @ coeffs.mT) * op).sum(-1)  # [B, H*W]
    if bias is not None:
        numerator = numerator + (text_embeds @ bias)[:, None, :]
        sq_norm = sq_norm + 2 * (op @ (coeffs @ bias)[..., None])[..., 0] + bias @ bias
    norm = sq_norm.clamp_min(0).sqrt().clamp_min(eps)
    logits = numerator / norm[..., None]
    return logits.mT.reshape(batch, -1, height, width)
