"""Measurement probes of the benchmark: matmul rate, peak memory, FLOP counts, time breakdown, host syncs.

See :mod:`alignclip.evaluation.bench` for how they are combined and what each number means.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import platform
import threading
import time
import warnings
from collections.abc import Callable, Iterator

import numpy as np
import psutil
import torch
from torch.utils.flop_counter import FlopCounterMode

from alignclip.ops.windows import pad_to_multiple, window_boxes, window_size
from alignclip.pipeline.segmentor import Segmentor

__all__ = [
    "PeakMemory",
    "count_flops",
    "host_syncs",
    "matmul_gflops",
    "model_bytes",
    "reference_upsampler_gflop",
    "sync_device",
    "time_breakdown",
]


def sync_device(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_gflops(device: torch.device | str = "cpu", n: int = 2048, reps: int = 3) -> float:
    """Dense fp32 matmul rate (GFLOP/s) of an ``n × n × n`` product: the best of ``reps`` timed runs."""
    device = torch.device(device)
    gen = torch.Generator(device="cpu").manual_seed(0)
    a = torch.randn(n, n, generator=gen).to(device)
    b = torch.randn(n, n, generator=gen).to(device)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(reps):
        sync_device(device)
        t0 = time.perf_counter()
        torch.mm(a, b)
        sync_device(device)
        best = min(best, time.perf_counter() - t0)
    return 2.0 * n**3 / best / 1e9


def _trim_heap() -> None:
    """Free Python garbage and return glibc's free heap pages to the OS (no-op elsewhere)."""
    gc.collect()
    if platform.system() == "Linux":
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6").malloc_trim(0)


class PeakMemory:
    """Largest rise of memory (bytes) during a ``with`` block on ``device`` (see the module docstring)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.peak_bytes = 0
        self._proc = psutil.Process()
        self._hwm = self._can_reset_hwm()

    @staticmethod
    def _can_reset_hwm() -> bool:
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            return PeakMemory._vm_hwm() is not None
        except OSError:
            return False

    @staticmethod
    def _vm_hwm() -> int | None:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
        return None

    @contextlib.contextmanager
    def measure(self) -> Iterator[PeakMemory]:
        if self.device.type == "cuda":
            sync_device(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            before = torch.cuda.memory_allocated(self.device)
            yield self
            sync_device(self.device)
            self.peak_bytes = torch.cuda.max_memory_allocated(self.device) - before
            return
        _trim_heap()
        before = self._proc.memory_info().rss
        if self._hwm:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            yield self
            self.peak_bytes = max(0, (self._vm_hwm() or before) - before)
            return
        peak, stop = [before], threading.Event()

        def sample() -> None:
            while not stop.wait(0.001):
                peak[0] = max(peak[0], self._proc.memory_info().rss)

        thread = threading.Thread(target=sample, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            stop.set()
            thread.join()
        self.peak_bytes = max(0, max(peak[0], self._proc.memory_info().rss) - before)


def model_bytes(seg: Segmentor) -> int:
    """Bytes of the parameters and buffers of every model a segmentor holds (CLIP, upsampler, VFM)."""
    total = 0
    for module in (seg.clip.model, seg.upsampler, seg.vfm):
        if module is not None:
            total += sum(t.numel() * t.element_size() for t in (*module.parameters(), *module.buffers()))
    return total


def _sdpa_cpu_flops(q, k, v, *args, out_shape=None, **kwargs) -> int:
    """FLOPs of CPU flash attention (not in torch's registry): ``QKᵀ`` and ``PV`` products."""
    b, h, length, e = q
    return 2 * b * h * length * k[-2] * e + 2 * b * h * length * k[-2] * v[-1]


def count_flops(seg: Segmentor, image: np.ndarray) -> dict[str, float]:
    """GFLOP of one :meth:`Segmentor.predict` on ``image``.

    Returns:
        ``total``, ``clip`` (the CLIP image encoder), ``upsampler``, ``vfm`` and ``rest`` (K-Means, propagation,
        logits and the rest of the pipeline). ``nn.MultiheadAttention``'s fused fast path is switched off while
        counting (it hides its matmuls from the counter; the arithmetic is the same).
    """
    mapping = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _sdpa_cpu_flops}
    encoder = {"flops": 0}

    def count_encoder(stage: str, fn: Callable) -> Callable:
        if stage != "encode":
            return fn

        def counted(*args, **kwargs):  # a nested counter sees the encoder's operations only
            with FlopCounterMode(display=False, custom_mapping=mapping) as inner:
                out = fn(*args, **kwargs)
            encoder["flops"] += inner.get_total_flops()
            return out

        return counted

    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with seg.instrumented(count_encoder), FlopCounterMode(display=False, custom_mapping=mapping) as counter:
            seg.predict(image)
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
    per_module = counter.get_flop_counts()

    def module_total(name: str | None) -> float:
        return float(sum(per_module.get(name, {}).values())) / 1e9 if name else 0.0

    total = float(counter.get_total_flops()) / 1e9
    up = module_total(type(seg.upsampler).__name__ if seg.upsampler is not None else None)
    vfm = module_total("VFM" if seg.vfm is not None else None)
    clip = encoder["flops"] / 1e9
    return dict(total=total, clip=clip, upsampler=up, vfm=vfm, rest=total - clip - up - vfm)


def reference_upsampler_gflop(seg: Segmentor, image: np.ndarray) -> float | None:
    """Upsampler GFLOP per image in the reference order (SegEarth-OV's code, no shortcut), or None without one.

    Counted from the architecture (:meth:`~alignclip.models.upsampler.JBUOne.reference_flops`: 1x1 convs, neighbour dot
    products, adaptive convolutions with their useful taps only, the final 1x1 conv at full resolution) for the
    image's windows: the work the original algorithm needs, whatever this package executes instead.
    """
    up = seg.upsampler
    if up is None or not hasattr(up, "reference_flops"):
        return None
    c = seg.config
    height, width = seg.processing_size(image)
    n = len(window_boxes(height, width, c.crop, c.stride))
    wh, ww = window_size(height, width, c.crop)
    left, right, top, bottom = pad_to_multiple(wh, ww, seg.clip.patch_size)
    p = seg.clip.patch_size
    return up.reference_flops(n, (wh + top + bottom) // p, (ww + left + right) // p) / 1e9


def host_syncs(seg: Segmentor, image: np.ndarray) -> int | None:
    """CUDA only: number of host synchronisations torch reports during one image (None on CPU)."""
    if seg.device.type != "cuda":
        return None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            seg.predict(image)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(w.message).lower() for w in caught)


def time_breakdown(seg: Segmentor, image: np.ndarray) -> dict[str, float]:
    """Milliseconds of one prediction split into ``clip`` (encoder), ``masks`` (a method's mask generation inside
    the encoder: CorrCLIP), ``upsampler``, ``vfm``, ``cce_rest`` (K-Means and propagation) and ``other`` (windows,
    SGA, logits, post-processing); one extra untimed-for-the-median run."""
    spent = dict(clip=0.0, upsampler=0.0, cce=0.0, vfm=0.0, masks=0.0)
    names = {"encode": "clip", "upsample": "upsampler", "cce": "cce", "vfm": "vfm", "masks": "masks"}

    def timed(stage: str, fn: Callable) -> Callable:
        name = names[stage]

        def wrapper(*args, **kwargs):
            sync_device(seg.device)
            t0 = time.perf_counter()
            out = fn(*args, **kwargs)
            sync_device(seg.device)
            spent[name] += 1e3 * (time.perf_counter() - t0)
            return out

        return wrapper

    with seg.instrumented(timed):
        sync_device(seg.device)
        t0 = time.perf_counter()
        seg.predict(image)
        sync_device(seg.device)
        total = 1e3 * (time.perf_counter() - t0)
    return dict(
        clip=spent["clip"] - spent["masks"],  # mask generation runs inside the encoder
        masks=spent["masks"],
        upsampler=spent["upsampler"],
        vfm=spent["vfm"],
        cce_rest=spent["cce"] - spent["vfm"],
        other=total - spent["clip"] - spent["upsampler"] - spent["cce"],
        total=total,
    )
