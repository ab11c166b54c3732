"""JBU feature upsamplers: SegEarth-OV's ``jbu_one``, FeatUp's ``jbu_stack`` (featup of Eq. 13).

Four learned joint-bilateral steps double the patch features (14 -> 28 -> 56 -> 112 -> 224 for a
224 crop); each upsamples bicubically and refines with per-pixel kernels predicted from the guidance
image. Pure PyTorch: the adaptive convolution runs as batched matmuls over small tiles
(:func:`alignclip.ops.jbu.adaptive_conv`), on CPU and GPU alike, without FeatUp's custom CUDA op.

Parameter names follow the released checkpoints, so Lightning files from SegEarth-OV
(``xclip_jbu_one_million_aid.ckpt``) and FeatUp (``clip_jbu_stack_cocostuff.ckpt``) load strictly.
Features are kept in ``channels_last`` memory; outputs have the documented shape [B, C, H, W] in
that memory format (``.contiguous()`` gives NCHW memory).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from alignclip.errors import CheckpointError, ConfigError, InputError, WeightsNotFoundError
from alignclip.ops.jbu import FactoredFeatures, adaptive_conv, bicubic_resize, neighbour_dot_products

__all__ = [
    "CHECKPOINT_PREFIX",
    "UPSAMPLER_NAMES",
    "JBULearnedRange",
    "JBUOne",
    "JBUStack",
    "build_upsampler",
    "load_upsampler_checkpoint",
]

UPSAMPLER_NAMES = ("jbu_one", "jbu_stack", "none")
CHECKPOINT_PREFIX = "upsampler."
_MISSING_FIX = (
    "download xclip_jbu_one_million_aid.ckpt from the SegEarth-OV GitHub repository "
    "(simfeatup_dev/weights) and pass --upsampler-ckpt PATH, or --upsampler-ckpt none for "
    "random weights"
)


def _pointwise_mlp(in_dim: int, out_dim: int) -> nn.Sequential:
    """1x1 conv -> GELU -> Dropout2d(0.1) -> 1x1 conv (the weights sit at indices 0 and 3)."""
    layers = [nn.Conv2d(in_dim, out_dim, 1), nn.GELU(), nn.Dropout2d(0.1)]
    return nn.Sequential(*layers, nn.Conv2d(out_dim, out_dim, 1))


class JBULearnedRange(nn.Module):
    """One learned joint-bilateral x2 upsampling step (FeatUp's JBU block).

    Args:
        radius: Kernel radius r (5 for ``jbu_one``: 121 taps; 3 for ``jbu_stack``: 49 taps).
        key_dim: Channels of the range keys.
        guidance_dim: Channels of the guidance image.
    """

    def __init__(self, radius: int, key_dim: int = 32, guidance_dim: int = 3) -> None:
        super().__init__()
        self.radius = radius
        taps = (2 * radius + 1) ** 2
        self.range_temp = nn.Parameter(torch.tensor(0.0))
        self.range_proj = _pointwise_mlp(guidance_dim, key_dim)  # keys of the range kernel
        self.fixup_proj = _pointwise_mlp(taps + guidance_dim, taps)  # correction of the kernel
        self.sigma_spatial = nn.Parameter(torch.tensor(1.0))

    def spatial_kernel(self) -> Tensor:
        """Gaussian of the tap offsets on a ``linspace(-1, 1, 2r+1)`` grid: [(2r+1)**2]."""
        grid = torch.linspace(-1.0, 1.0, 2 * self.radius + 1, device=self.sigma_spatial.device)
        sq_dist = grid[:, None] ** 2 + grid[None, :] ** 2
        return torch.exp(-sq_dist / (2 * self.sigma_spatial**2)).reshape(-1)

    def kernel(self, guidance: Tensor) -> Tensor:
        """Per-pixel kernels [B, H, W, (2r+1)**2] from the guidance [B, 3, H, W] at the target size.

        softmax(range logits * exp(range_temp)) x spatial Gaussian, normalised over the taps, plus
        0.1 * fixup(kernel, guidance), so the taps need not sum to 1.
        """
        logits = neighbour_dot_products(self.range_proj(guidance), self.radius)
        temperature = self.range_temp.exp().clamp(1e-4, 1e4)
        combined = torch.softmax(logits * temperature, dim=-1) * self.spatial_kernel()
        combined = combined / combined.sum(-1, keepdim=True).clamp(min=1e-7)
        fixup = self.fixup_proj(torch.cat([combined.permute(0, 3, 1, 2), guidance], dim=1))
        return combined + 0.1 * fixup.permute(0, 2, 3, 1)

    def reference_flops(self, batch: int, channels: int, height: int, width: int) -> int:
        """Multiply-add FLOPs (2 per MAC) of one step in the reference order, H x W output pixels.

        Range keys (two 1x1 convs), neighbour dot products, the fixup's two 1x1 convs and the
        adaptive convolution over ``channels``; interpolation and elementwise work not counted
        (as :class:`torch.utils.flop_counter.FlopCounterMode`).
        """
        taps = (2 * self.radius + 1) ** 2
        key_dim, guidance_dim = self.range_proj[0].out_channels, self.range_proj[0].in_channels
        per_pixel = (
            guidance_dim * key_dim
            + key_dim * key_dim
            + taps * key_dim
            + (taps + guidance_dim) * taps
            + taps * taps
            + taps * channels
        )
        return 2 * batch * height * width * per_pixel

    def forward(self, source: Tensor, guidance: Tensor) -> Tensor:
        """Upsample ``source`` [B, C, h, w] to the guidance size [B, 3, H, W] -> [B, C, H, W]."""
        kernel = self.kernel(guidance)
        padded = bicubic_resize(source, tuple(guidance.shape[-2:]), self.radius)  # bicubic, reflect-padded
        return adaptive_conv(padded, kernel.permute(0, 3, 1, 2))


class _JBUChain(nn.Module, ABC):
    """Four JBU x2 steps then ``x + 0.1 * conv1x1(Dropout2d(0.2)(x))`` (featup of Eq. 13).

    Two exact reorderings speed up eval mode. Given the guidance, the four steps are one linear
    map ``L`` acting on every channel alike, without bias (bicubic, reflect padding and adaptive
    convolutions whose kernels depend on the guidance only):

    - ``fold_final_proj``: ``L(x) + 0.1 (W L(x) + b) = L(x + 0.1 W x) + 0.1 b``: the 1x1 conv runs
      at 14x14, not 224x224. The bias stays outside ``L``: after the 0.1 * fixup term the taps do
      not sum to 1, so ``L`` does not preserve constants.
    - ``operator_matmul``: when h*w < C, the h*w one-hot images go through the steps (h*w
      channels instead of C) and the resulting matrix [16h*16w, h*w] multiplies all C channels.
      With ``factored=True`` (and the fold) the product is not formed: the caller gets the matrix
      and the patch features (:class:`~alignclip.ops.jbu.FactoredFeatures`), and cosine logits
      need ``[H*W, h*w]`` products only (:func:`~alignclip.ops.jbu.cosine_logits`).
    """

    def __init__(self, feat_dim: int = 512, fold_final_proj: bool = True, operator_matmul: bool = True) -> None:
        """
        Args:
            feat_dim: Feature channels C (512 for CLIP ViT-B/16).
            fold_final_proj: Fold the final 1x1 conv before the steps in eval mode (exact).
            operator_matmul: Apply the steps as one matrix in eval mode when h*w < C (exact).
        """
        super().__init__()
        self.feat_dim = feat_dim
        self.fold_final_proj = fold_final_proj
        self.operator_matmul = operator_matmul
        self.fixup_proj = nn.Sequential(nn.Dropout2d(0.2), nn.Conv2d(feat_dim, feat_dim, 1))
        self._build_steps()

    @abstractmethod
    def _build_steps(self) -> None:
        """Register the step modules under the checkpoints' names."""

    @abstractmethod
    def steps(self) -> list[JBULearnedRange]:
        """The four x2 steps in order."""

    def reference_flops(self, batch: int, height: int, width: int) -> int:
        """FLOPs of the four steps and the final 1x1 conv in the reference order (no shortcut),
        for ``batch`` sources of ``height`` x ``width`` patches: what SegEarth-OV's code executes."""
        total, h, w = 0, height, width
        for step in self.steps():
            h, w = 2 * h, 2 * w
            total += step.reference_flops(batch, self.feat_dim, h, w)
        return total + 2 * batch * h * w * self.feat_dim * self.feat_dim

    def _check_inputs(self, source: Tensor, guidance: Tensor) -> None:
        name, radius = type(self).__name__, self.steps()[0].radius
        if source.dim() != 4 or source.shape[1] != self.feat_dim:
            raise InputError(
                f"{name} expects source [B, {self.feat_dim}, h, w], got {tuple(source.shape)}; "
                f"pass patch features with feat_dim={self.feat_dim} channels"
            )
        if guidance.dim() != 4 or guidance.shape[1] != 3 or guidance.shape[0] != source.shape[0]:
            raise InputError(
                f"{name} expects guidance [{source.shape[0]}, 3, H, W], got "
                f"{tuple(guidance.shape)}; pass the RGB crop with the source's batch size"
            )
        if 2 * min(source.shape[-2:]) <= radius:
            raise InputError(
                f"{name} needs source sides > {radius // 2} (reflect padding), got "
                f"{tuple(source.shape[-2:])}; pass a larger crop"
            )

    def _run_steps(self, x: Tensor, guidance: Tensor) -> Tensor:
        """Four x2 steps, each guided by the image average-pooled to its size: x16."""
        for step in self.steps():
            x = step(x, F.adaptive_avg_pool2d(guidance, (2 * x.shape[-2], 2 * x.shape[-1])))
        return x

    def _operator(self, x: Tensor, guidance: Tensor) -> Tensor:
        """Matrix ``[B, H*W, h*w]`` of the four steps: the h*w one-hot images upsampled."""
        batch, _, height, width = x.shape
        pixels = height * width
        basis = torch.eye(pixels, dtype=x.dtype, device=x.device).view(1, pixels, height, width)
        basis = basis.expand(batch, -1, -1, -1).contiguous(memory_format=torch.channels_last)
        operator = self._run_steps(basis, guidance)  # [B, h*w, H, W], channels_last
        return operator.permute(0, 2, 3, 1).reshape(batch, -1, pixels)

    def forward(
        self,
        source: Tensor,
        guidance: Tensor,
        fold_final_proj: bool | None = None,
        operator_matmul: bool | None = None,
        factored: bool = False,
    ) -> Tensor | FactoredFeatures:
        """Upsample patch features x16 guided by the image.

        Args:
            source: Patch features [B, C, h, w] (e.g. [B, 512, 14, 14] for a 224 crop).
            guidance: CLIP-normalised crop [B, 3, 16h, 16w].
            fold_final_proj: Override the constructor's setting (see the class docstring).
            operator_matmul: Override the constructor's setting (see the class docstring).
                Both reorderings are skipped in training mode (Dropout2d must see the output).
            factored: Return :class:`~alignclip.ops.jbu.FactoredFeatures` (operator and folded
                patch features, never multiplied out) when the operator path is taken.

        Returns:
            Upsampled features [B, C, 16h, 16w] (``channels_last`` memory), parameter dtype, or
            their factored form.
        """
        self._check_inputs(source, guidance)
        fold = self.fold_final_proj if fold_final_proj is None else fold_final_proj
        as_matrix = self.operator_matmul if operator_matmul is None else operator_matmul
        conv = self.fixup_proj[1]
        x = source.to(conv.weight.dtype).contiguous(memory_format=torch.channels_last)
        guidance = guidance.to(conv.weight.dtype).contiguous(memory_format=torch.channels_last)
        fold = fold and not self.training
        if fold:
            x = x + 0.1 * F.conv2d(x, conv.weight)
        if not (as_matrix and not self.training and x.shape[-2] * x.shape[-1] < x.shape[1]):
            x = self._run_steps(x, guidance)
            if fold:
                return x + 0.1 * conv.bias.view(1, -1, 1, 1)
            return x + 0.1 * self.fixup_proj(x)
        batch, channels = x.shape[:2]
        size = (x.shape[-2] * 16, x.shape[-1] * 16)
        coeffs = x.reshape(batch, channels, -1).mT  # [B, h*w, C]
        features = FactoredFeatures(self._operator(x, guidance), coeffs, 0.1 * conv.bias if fold else None, size)
        if factored and fold:
            return features
        out = features.dense()
        return out if fold else out + 0.1 * self.fixup_proj(out)


class JBUOne(_JBUChain):
    """SegEarth-OV's SimFeatUp: one radius-5 JBU step ``up`` applied four times (293,729 parameters for C = 512;
    arguments as :class:`_JBUChain`)."""

    def _build_steps(self) -> None:
        self.up = JBULearnedRange(radius=5)

    def steps(self) -> list[JBULearnedRange]:
        """The shared step, four times."""
        return [self.up] * 4


class JBUStack(_JBUChain):
    """FeatUp's JBU stack: four separate radius-3 JBU steps ``up1..up4`` (287,588 parameters for C = 512;
    arguments as :class:`_JBUChain`)."""

    def _build_steps(self) -> None:
        self.up1, self.up2, self.up3, self.up4 = (JBULearnedRange(radius=3) for _ in range(4))

    def steps(self) -> list[JBULearnedRange]:
        """The four separate steps."""
        return [self.up1, self.up2, self.up3, self.up4]


def _read_state_dict(path: Path) -> dict[str, object]:
    """Read a Lightning checkpoint or a plain state dict; return the upsampler's entries."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - every unreadable file gets the same message
        reason = f"{type(err).__name__}: {(str(err).splitlines() or [''])[0]}"
        raise CheckpointError(
            f"cannot read upsampler checkpoint {path} with torch.load(weights_only=True) "
            f"({reason}); expected a Lightning .ckpt or a state dict of tensors; re-save the "
            "tensors with torch.save(state_dict, PATH)"
        ) from err
    lightning = isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping)
    state = obj["state_dict"] if lightning else obj
    if not isinstance(state, Mapping):
        raise CheckpointError(
            f"upsampler checkpoint {path} holds a {type(obj).__name__}; expected a Lightning "
            "checkpoint (a dict with 'state_dict') or a state dict; re-save it as one"
        )
    if lightning and any(str(k).startswith(CHECKPOINT_PREFIX) for k in state):
        # a whole Lightning model (e.g. with a backbone or a downsampler): keep the upsampler only
        state = {k: v for k, v in state.items() if str(k).startswith(CHECKPOINT_PREFIX)}
    return {str(k).removeprefix(CHECKPOINT_PREFIX): v for k, v in state.items()}


def load_upsampler_checkpoint(module: nn.Module, path: str | Path) -> None:
    """Load released upsampler weights strictly into ``module``.

    Accepts a Lightning checkpoint, ``{'state_dict': {'upsampler.<key>': tensor, ...}, ...}``,
    whose keys without the ``upsampler.`` prefix (a whole model's backbone, downsampler, ...) are
    ignored, or a plain state dict, whose ``upsampler.`` prefix is stripped and whose every key must
    belong to the module. Read with ``weights_only=True`` (no arbitrary pickles).

    Args:
        module: A :class:`JBUOne` or :class:`JBUStack` (or any module with matching keys).
        path: Checkpoint file.

    Raises:
        WeightsNotFoundError: The file does not exist.
        CheckpointError: The file is unreadable or its keys or shapes do not match the module.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsNotFoundError(f"upsampler checkpoint not found at {path}; {_MISSING_FIX}")
    state, own, name = _read_state_dict(path), module.state_dict(), type(module).__name__
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:

        def first(keys: list[str]) -> str:
            return f"'{keys[0]}' (+{len(keys) - 1} more)" if keys else "none"

        raise CheckpointError(
            f"upsampler checkpoint {path} does not match {name}: missing key {first(missing)}, "
            f"unexpected key {first(unexpected)}; expected a Lightning .ckpt with state_dict keys "
            f"'{CHECKPOINT_PREFIX}' + {name} keys (e.g. '{CHECKPOINT_PREFIX}{next(iter(own))}'); "
            "check that the upsampler name (jbu_one/jbu_stack) matches the file"
        )
    for key, value in state.items():
        if not isinstance(value, Tensor) or value.shape != own[key].shape:
            got = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
            raise CheckpointError(
                f"upsampler checkpoint {path}: '{key}' has shape {got}, {name} expects "
                f"{tuple(own[key].shape)}; build the upsampler with the file's feat_dim"
            )
    module.load_state_dict(state, strict=True)


def build_upsampler(name: str, feat_dim: int = 512, checkpoint: str | Path | None = None) -> nn.Module | None:
    """Build a feature upsampler by name, in eval mode.

    Args:
        name: ``jbu_one`` (SegEarth-OV), ``jbu_stack`` (FeatUp) or ``none``.
        feat_dim: Feature channels C of the backbone's patch features.
        checkpoint: Weights file (see :func:`load_upsampler_checkpoint`); None: random weights.

    Returns:
        The upsampler, ``forward(source [B, C, h, w], guidance [B, 3, 16h, 16w]) ->
        [B, C, 16h, 16w]``, or None for ``none``.

    Raises:
        ConfigError: Unknown name or invalid feat_dim.
        WeightsNotFoundError: ``checkpoint`` does not exist.
        CheckpointError: ``checkpoint`` does not match the upsampler.
    """
    if name not in UPSAMPLER_NAMES:
        raise ConfigError(f"unknown upsampler {name!r}; valid names: {', '.join(UPSAMPLER_NAMES)}")
    if name == "none":
        return None
    if not isinstance(feat_dim, int) or feat_dim < 1:
        raise ConfigError(f"upsampler feat_dim must be a positive int, got {feat_dim!r}; use 512")
    module: nn.Module = JBUOne(feat_dim) if name == "jbu_one" else JBUStack(feat_dim)
    if checkpoint is not None:
        load_upsampler_checkpoint(module, checkpoint)
    return module.eval()
