"""The segmentor: SegEarth-OV's sliding-window pipeline with AlignCLIP's SGA and CCE (paper Sec. 3, Fig. 2).

Per image: resize (long side 448, OpenCV bilinear as the baseline) → windows in batches of ``window_batch`` ("auto":
1 on CPU, 32 on GPU), CLIP-normalised on demand → per batch: CLIP dense features (modified last block) → text
embeddings aligned by SGA (Eq. 5-8) → upsampled logits S_up (Eq. 13, from the factored upsampler output) →
CCE-refined patch logits fused with S_up (Eq. 9-14) → CLS bias term → logits accumulated in bands of rows and
count-averaged → bilinear resize to the input size (in row strips) → softmax, synonyms, threshold, argmax. Without
resize and with ``keep_logits=False`` each finished band becomes labels at once (bounded memory). An encoder of whole
images (:attr:`~alignclip.methods.base.Encoder.encode_image`, Trident) replaces the window loop: the cosine logits of
its features (SGA over them when on) are resized bilinearly to the image, band by band.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from alignclip.data import load_manifest
from alignclip.errors import ConfigError, InputError
from alignclip.io.images import resize_long_side
from alignclip.methods import ENCODERS, EncoderContext
from alignclip.methods.base import IMAGE_CONTEXT_SIDE
from alignclip.models.clip import ClipBundle, create_clip, dense_features
from alignclip.models.templates import get_templates
from alignclip.models.text import ClassQueries, parse_classes
from alignclip.models.upsampler import build_upsampler
from alignclip.models.vfm import create_vfm
from alignclip.ops.cce import (
    cosine_affinity,
    fuse_logits,
    product_affinity,
    propagate_within_clusters,
    vfm_input_size,
)
from alignclip.ops.jbu import FactoredFeatures, cosine_logits
from alignclip.ops.kmeans import kmeans
from alignclip.ops.postprocess import class_probabilities, label_dtype, predict_labels
from alignclip.ops.resize import bilinear_rows
from alignclip.ops.sga import patch_logits, self_guided_alignment
from alignclip.ops.windows import (
    Region,
    pad_to_multiple,
    stream_windows,
    window_batches,
    window_boxes,
)
from alignclip.pipeline.config import SegmentorConfig, build_config
from alignclip.pipeline.runtime import (
    cached_model,
    check_image_size,
    resolve_device,
    resolve_dtype,
    resolve_window_batch,
    text_embeddings,
)

__all__ = ["Prediction", "Segmentor", "build_segmentor"]

log = logging.getLogger(__name__)


@dataclass
class Prediction:
    """Output of :meth:`Segmentor.predict`."""

    labels: np.ndarray  # [H0, W0] class indices at the input's size
    logits: torch.Tensor | None  # [Q, H, W] count-averaged query logits at the processing size (after resize);
    # None from predict(..., keep_logits=False)


class Segmentor:
    """Open-vocabulary segmentor for one set of class names.

    Args:
        config: the pipeline settings (see :func:`alignclip.pipeline.config.build_config`).
        class_names: one entry per class; synonyms separated by commas (``"tree,forest"``).
        clip: an already loaded backbone to reuse (its name must match ``config.backbone``).
    """

    def __init__(self, config: SegmentorConfig, class_names: Sequence[str], clip: ClipBundle | None = None):
        self.config = config
        self.device = resolve_device(config.device)
        self.window_batch = resolve_window_batch(config.window_batch, self.device)  # windows per forward
        self.autocast_dtype = resolve_dtype(config.precision, self.device)
        self.classes: ClassQueries = parse_classes(class_names)
        if not 0 <= config.bg_idx < self.classes.num_classes:
            raise ConfigError(
                f"bg_idx={config.bg_idx} is not a class index for {self.classes.num_classes} classes; "
                f"set bg_idx between 0 and {self.classes.num_classes - 1}"
            )
        start = time.perf_counter()
        clip_key = ("clip", config.backbone, config.pretrained, str(self.device))
        self.clip = clip or cached_model(clip_key, lambda: create_clip(config.backbone, config.pretrained, self.device))
        self.templates = get_templates(config.templates)
        text_start = time.perf_counter()
        self.text_embeds = text_embeddings(self.clip, self.classes.queries, self.templates, self.device)  # [Q, D]
        text_end = time.perf_counter()
        self.query_to_class = torch.tensor(self.classes.query_to_class, device=self.device)
        if config.upsampler != "none" and config.upsampler_ckpt is None:
            raise ConfigError(
                f"upsampler {config.upsampler} needs a checkpoint: pass --upsampler-ckpt PATH "
                f"(xclip_jbu_one_million_aid.ckpt from the SegEarth-OV repository) or "
                f"--upsampler-ckpt none for random weights (pipeline check)"
            )
        ckpt = None if config.upsampler_ckpt in (None, "none") else config.upsampler_ckpt
        with torch.random.fork_rng(devices=[]):  # random weights (no checkpoint) are the same in every run
            torch.manual_seed(config.seed)
            self.upsampler = build_upsampler(config.upsampler, feat_dim=self.clip.embed_dim, checkpoint=ckpt)
        if self.upsampler is not None:
            self.upsampler = self.upsampler.to(self.device).eval()
        self.vfm = (
            cached_model(
                ("vfm", config.vfm, config.vfm_pretrained, str(self.device)),
                lambda: create_vfm(config.vfm, config.vfm_pretrained, self.device),
            )
            if config.cce
            else None
        )
        self.encoder = ENCODERS[config.encoder]  # None: CLIP's dense features with config.attention
        self.encoder_vfm = (
            cached_model(
                ("vfm", config.encoder_vfm, config.encoder_vfm_pretrained, str(self.device)),
                lambda: create_vfm(config.encoder_vfm, config.encoder_vfm_pretrained, self.device),
            )
            if config.encoder_vfm != "none" and self.encoder is not None and self.encoder.uses_vfm
            else None
        )
        extra = self.encoder.extra_vfms(config) if self.encoder is not None and self.encoder.extra_vfms else {}
        #: ``{key: (name, pretrained)}`` of the encoder's further VFMs (:attr:`Encoder.extra_vfms`), built once each
        self.extra_vfm_names = dict(extra)
        vfms = {
            key: cached_model(
                ("vfm", name, pretrained, str(self.device)),
                lambda name=name, pretrained=pretrained: create_vfm(name, pretrained, self.device),
            )
            for key, (name, pretrained) in extra.items()
        }
        self.encoder_context = EncoderContext(
            clip=self.clip, vfm=self.encoder_vfm, config=config, text=self.text_embeds, vfms=vfms
        )
        if self.encoder is not None and self.encoder.prepare is not None:
            self.encoder.prepare(config, self.device)  # a method's own models (CorrCLIP's mask generator): errors now
        #: seconds spent building: ``models`` (CLIP, upsampler, VFMs; 0 when reused) and ``text`` (encoding or cache)
        self.build_seconds = {
            "models": (text_start - start) + (time.perf_counter() - text_end),
            "text": text_end - text_start,
        }
        mean = torch.tensor(self.clip.mean, device=self.device).view(3, 1, 1) * 255.0
        std = torch.tensor(self.clip.std, device=self.device).view(3, 1, 1) * 255.0
        self._mean, self._std = mean, std

    # ------------------------------------------------------------------ properties
    @property
    def is_random(self) -> bool:
        """True when any model in the pipeline has random weights (results are pipeline checks)."""
        return "random" in self.weights_identity().values()

    def weights_identity(self) -> dict[str, str]:
        """What weights every model uses (for provenance)."""
        c = self.config
        up = (
            "none"
            if c.upsampler == "none"
            else (c.upsampler_ckpt if c.upsampler_ckpt not in (None, "none") else "random")
        )

        def vfm_identity(name: str, pretrained: str) -> str:
            return "random" if pretrained == "none" or name.startswith("tiny") else f"{name}:{pretrained}"

        vfm = vfm_identity(c.vfm, c.vfm_pretrained) if c.cce else "none"
        identity = {"clip": self.clip.weights_id, "clip_activation": self.clip.activation, "upsampler": up, "vfm": vfm}
        if self.encoder_vfm is not None:
            identity["encoder_vfm"] = vfm_identity(c.encoder_vfm, c.encoder_vfm_pretrained)
        for key, (name, pretrained) in self.extra_vfm_names.items():
            identity[key] = vfm_identity(name, pretrained)
        return identity

    @contextlib.contextmanager
    def instrumented(self, wrap: Callable[[str, Callable], Callable]) -> Iterator[None]:
        """Within the block, run the pipeline's stages through ``wrap(stage, fn)`` (timing, FLOP counting, ...).

        Stages: ``"encode"`` (CLIP image encoder, :meth:`_encode`, or :meth:`_encode_image` for an encoder of whole
        images), ``"upsample"`` (the upsampler), ``"cce"`` (VFM, K-Means and propagation), ``"vfm"`` (the VFM
        forward inside ``"cce"``; only with CCE on) and the encoder's own stages
        (:attr:`~alignclip.methods.base.Encoder.stages`, e.g. CorrCLIP's ``"masks"`` inside ``"encode"``).
        ``wrap`` returns the callable used instead of ``fn``; the stages are restored on exit.
        """
        targets = [("encode", self, "_encode"), ("upsample", self, "_upsample"), ("cce", self, "_cce")]
        if self.encoder is not None and self.encoder.encode_image is not None:
            targets.append(("encode", self, "_encode_image"))  # whole-image features (Trident): no windows encoded
        if self.vfm is not None:
            targets.append(("vfm", self.vfm, "forward"))
        if self.encoder is not None:
            targets += list(self.encoder.stages)
        missing = object()
        saved = [(owner, attr, vars(owner).get(attr, missing)) for _, owner, attr in targets]
        for stage, owner, attr in targets:
            setattr(owner, attr, wrap(stage, getattr(owner, attr)))  # an instance attribute shadows the method
        try:
            yield
        finally:
            for owner, attr, old in reversed(saved):
                if old is missing:
                    delattr(owner, attr)
                else:  # a module's function (an encoder's stage): put the original back
                    setattr(owner, attr, old)

    # ------------------------------------------------------------------ pipeline
    def _autocast(self):
        if self.autocast_dtype is None:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    def preprocess(self, image: np.ndarray) -> torch.Tensor:
        """``[H0, W0, 3]`` uint8 RGB → ``[3, H, W]`` float, resized (long side) and CLIP-normalised."""
        resized = self._resized(image)
        return self._normaliser(resized)(0, resized.shape[0], 0, resized.shape[1])

    def processing_size(self, image: np.ndarray) -> tuple[int, int]:
        """``(H, W)`` at which ``image`` is segmented (after the long-side resize), without normalising it."""
        return tuple(self._resized(image).shape[:2])

    def _resized(self, image: np.ndarray) -> np.ndarray:
        """The checked ``[H, W, 3]`` uint8 image at the processing size (long side resized; no copy without)."""
        if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            shape = getattr(image, "shape", None)
            raise InputError(
                f"expected an RGB uint8 array [H, W, 3], got {type(image).__name__} {shape}; read images "
                f"with alignclip.io.images.read_image"
            )
        check_image_size(self.config, image.shape[0], image.shape[1], self.clip.patch_size)  # too thin for windows
        if self.config.long_side is not None:
            image = resize_long_side(image, self.config.long_side)
        return image

    def _normaliser(self, image: np.ndarray) -> Region:
        """``(y1, y2, x1, x2)`` → ``[3, y2 - y1, x2 - x1]`` CLIP-normalised float pixels of a uint8 ``[H, W, 3]``
        image, computed on demand: only the uint8 image is held on the device, never the whole image as float."""
        pixels = torch.from_numpy(np.ascontiguousarray(image)).to(self.device).permute(2, 0, 1)  # [3, H, W] uint8
        return lambda y1, y2, x1, x2: (pixels[:, y1:y2, x1:x2].float() - self._mean) / self._std

    def _encode(
        self, crops: torch.Tensor, boxes: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Padded crops → (padded ``[B, 3, ph, pw]``, patch feats ``[B, D, h, w]``, CLS feats ``[B, D]``, the patch
        features SGA takes its prototypes from ``[B, D, h, w]``: ``patch`` unless an encoder gives its own).
        ``boxes`` ``[B, 4]`` (y1, y2, x1, x2 in the processing-size image) go to an encoder that asks for them
        (:attr:`~alignclip.methods.base.Encoder.uses_boxes`)."""
        c = self.config
        left, right, top, bottom = pad_to_multiple(crops.shape[-2], crops.shape[-1], self.clip.patch_size)
        x = F.pad(crops, (left, right, top, bottom)) if (left or right or top or bottom) else crops
        sga = None
        with self._autocast():
            if self.encoder is None:
                patch, cls = dense_features(
                    self.clip.model.visual, x, c.attention, c.drop_residual, c.naclip_std, c.pos_embed_interp
                )
            else:
                args = (boxes,) if self.encoder.uses_boxes else ()
                out = self.encoder.encode(self.encoder_context, x, *args)
                patch, cls = out[0], out[1]
                sga = out[2] if len(out) > 2 else None
        patch = patch.float()
        return x, patch, cls.float(), patch if sga is None else sga.float()

    def _upsample(
        self, patch: torch.Tensor, x: torch.Tensor, factored: bool = False
    ) -> torch.Tensor | FactoredFeatures | None:
        """Upsampled features ``[B, D, H, W]`` of the padded windows ``x``, or their factored form (exact, cheaper
        for cosine logits; see :class:`~alignclip.ops.jbu.FactoredFeatures`) when ``factored`` and available."""
        if self.upsampler is None:
            return None
        with self._autocast():
            up = self.upsampler(patch, x, factored=factored)
        up = up.float()
        if tuple(up.shape[-2:]) != tuple(x.shape[-2:]):
            dense = up.dense() if isinstance(up, FactoredFeatures) else up
            up = F.interpolate(dense, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return up

    def _aligned_text(self, patch: torch.Tensor, up: torch.Tensor | FactoredFeatures | None) -> torch.Tensor:
        """SGA per window: ``[B, Q, D]`` (Eq. 5-7) from ``patch``, the SGA source of :meth:`_encode`, or from ``up``
        (``sga_source="upsampled"``); T expanded when SGA is off."""
        c = self.config
        t = self.text_embeds
        if not c.sga:
            return t.expand(patch.shape[0], -1, -1)
        src = up if c.sga_source == "upsampled" else patch
        if isinstance(src, FactoredFeatures):
            src = src.dense()
        if src is None:
            raise ConfigError("sga_source='upsampled' needs an upsampler; set upsampler or sga_source='patch'")
        return self_guided_alignment(src.flatten(2).transpose(1, 2), t, c.alpha, c.top_n, c.sga_prototype_norm)

    def _cce(self, x: torch.Tensor, s_patch: torch.Tensor) -> torch.Tensor:
        """CCE-refined logits Ŝ ``[B, Q, hv, wv]`` from patch logits S' ``[B, Q, h, w]`` (Eq. 9-12)."""
        c = self.config
        vfm = self.vfm
        size = vfm_input_size(
            tuple(x.shape[-2:]),
            tuple(s_patch.shape[-2:]),
            vfm.patch_size,
            c.grid_align,
            c.vfm_resolution,
            vfm.native_size,
        )
        with self._autocast():
            feats, attn = vfm(vfm.prepare(x, self.clip.mean, self.clip.std, size), c.vfm_features)
        feats, attn = feats.float(), attn.float()
        b, hv, wv, _ = feats.shape
        raw = feats.reshape(b, hv * wv, -1)
        flat = F.normalize(raw, dim=-1)
        n = hv * wv
        if c.n_clusters > n:
            raise ConfigError(
                f"K_c={c.n_clusters} exceeds the number of VFM patches N={n} per window; choose n_clusters <= {n}"
            )
        points = flat if c.kmeans_features == "normalized" else raw
        ids, _ = kmeans(
            points, c.n_clusters, n_iter=c.kmeans_iters, n_init=c.kmeans_init, seed=c.seed, init=c.kmeans_seeding
        )  # Eq. 9
        affinity = {
            "attention": lambda: attn,
            "cosine": lambda: cosine_affinity(flat),
            "product": lambda: product_affinity(raw),
        }[c.affinity]()  # A of Eq. 11
        s = s_patch
        if s.shape[-2:] != (hv, wv):
            s = F.interpolate(s, size=(hv, wv), mode="bilinear", align_corners=False)
        refined = propagate_within_clusters(
            affinity, ids, s.flatten(2).transpose(1, 2), power=c.affinity_power
        )  # Eq. 10-12
        return refined.transpose(1, 2).reshape(b, -1, hv, wv)

    def window_logits(
        self, crops: torch.Tensor, text: torch.Tensor | None = None, boxes: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Logits ``[B, Q, h, w]`` of a batch of CLIP-normalised windows ``[B, 3, h, w]``.

        Args:
            text: ``[B, Q, D]`` or ``[Q, D]`` text embeddings to use instead of per-window SGA.
            boxes: ``[B, 4]`` the windows' places in the image (for an encoder that uses them).
        """
        c = self.config
        h, w = crops.shape[-2:]
        x, patch, cls, sga_source = self._encode(crops, boxes)
        up = self._upsample(patch, x, factored=True)
        t = self._aligned_text(sga_source, up) if text is None else text.expand(patch.shape[0], -1, -1)
        if self.encoder is not None and self.encoder.adjust_text is not None:
            t = self.encoder.adjust_text(self.encoder_context, patch, cls, t)  # after SGA (CASS's text adjustment)
        s_patch = patch_logits(patch, t)  # S' (Eq. 8)
        if up is not None:
            logits = cosine_logits(up, t)  # S_up (Eq. 13)
        else:
            logits = F.interpolate(s_patch, size=x.shape[-2:], mode="bilinear", align_corners=False)
        cls_bias = None
        if c.cls_token_lambda:  # global-bias alleviation: λ · sim(CLS, T') per window, added to every pixel
            t_cls = t if c.sga_cls_term else self.text_embeds.expand_as(t)
            cls_bias = c.cls_token_lambda * torch.einsum("bd,bqd->bq", F.normalize(cls, dim=-1), t_cls)[..., None, None]
        if c.cce and cls_bias is not None and c.cls_term_target == "upsampled":
            logits = logits + cls_bias  # on S_up only: λ(1 − β) after the fusion (decision D9)
            cls_bias = None
        if c.cce:
            logits = fuse_logits(self._cce(x, s_patch), logits, c.beta)  # Eq. 14
        if cls_bias is not None:
            logits = logits + cls_bias
        top, left = (x.shape[-2] - h) // 2, (x.shape[-1] - w) // 2
        return logits[:, :, top : top + h, left : left + w]

    def _image_text(self, region: Region, boxes: torch.Tensor) -> torch.Tensor:
        """SGA over the whole image (``sga_scope='image'``): one ``[Q, D]`` for all windows.

        Args:
            region: the image's normalised pixels on demand (only each batch's rows are made float).
            boxes: ``[n, 4]`` the windows (:func:`~alignclip.ops.windows.window_boxes`).
        """
        c = self.config
        best_sim, best_feat = None, None
        for chunk, crops in window_batches(boxes, self.window_batch, region):
            x, patch, _, sga_source = self._encode(crops, chunk)
            src = self._upsample(patch, x) if c.sga_source == "upsampled" else sga_source
            raw = src.flatten(2).transpose(1, 2).reshape(-1, src.shape[1])  # [B*N, D]
            f = F.normalize(raw, dim=-1)
            sim = self.text_embeds @ f.T  # [Q, B*N]
            top = sim.topk(min(c.top_n, sim.shape[1]), dim=1)
            cand_sim, cand_feat = top.values, (f if c.sga_prototype_norm else raw)[top.indices]  # [Q, n], [Q, n, D]
            if best_sim is not None:
                cand_sim, cand_feat = torch.cat([best_sim, cand_sim], 1), torch.cat([best_feat, cand_feat], 1)
            keep = cand_sim.topk(min(c.top_n, cand_sim.shape[1]), dim=1).indices
            best_sim = cand_sim.gather(1, keep)
            best_feat = cand_feat.gather(1, keep[..., None].expand(-1, -1, cand_feat.shape[-1]))
        # the candidates are the global top-n patches; SGA over them selects exactly those
        return self_guided_alignment(best_feat, self.text_embeds[:, None, :], c.alpha, c.top_n, c.sga_prototype_norm)[
            :, 0
        ]

    def _logit_bands(self, region: Region, height: int, width: int) -> Iterator[tuple[int, torch.Tensor]]:
        """Count-averaged query logits of an image in bands of finished rows ``(row_start, [Q, r, W])``
        (:func:`~alignclip.ops.windows.stream_windows`); ``region`` gives its normalised pixels on demand."""
        c = self.config
        text = None
        if self.encoder is not None:  # the whole image on demand, for methods with an image-level term (CASS)
            self.encoder_context.image = self._whole_image(region, height, width)
        if self.encoder is not None and self.encoder.encode_image is not None:  # no windows here (Trident)
            yield from self._image_feature_bands(height, width)
            return
        if c.sga and c.sga_scope == "image":  # one pass over all windows first
            text = self._image_text(region, window_boxes(height, width, c.crop, c.stride))
        yield from stream_windows(
            height,
            width,
            c.crop,
            c.stride,
            self.window_batch,
            region,
            lambda crops, chunk: self.window_logits(crops, text, chunk),
        )

    def _encode_image(self) -> torch.Tensor:
        """The encoder's whole-image features ``[1, D, h, w]`` (:attr:`Encoder.encode_image`), float32."""
        with self._autocast():
            return self.encoder.encode_image(self.encoder_context).float()

    def _image_feature_bands(self, height: int, width: int, rows: int = 256) -> Iterator[tuple[int, torch.Tensor]]:
        """Logits of an encoder's whole-image features in bands of ``rows`` rows: cosine logits on its grid (T, or T'
        of SGA over all its features), resized bilinearly to ``height × width`` band by band (bounded memory)."""
        c = self.config
        feats = self._encode_image()  # [1, D, h, w]
        t = self.text_embeds[None]
        if c.sga:
            t = self_guided_alignment(
                feats.flatten(2).transpose(1, 2), self.text_embeds, c.alpha, c.top_n, c.sga_prototype_norm
            )
        logits = patch_logits(feats, t)[0]  # [Q, h, w]
        for r in range(0, height, rows):
            yield r, bilinear_rows(logits, (height, width), r, min(r + rows, height))

    @staticmethod
    def _whole_image(region: Region, height: int, width: int) -> Callable[[], torch.Tensor]:
        """A new callable giving the whole normalised image ``[1, 3, H, W]``, downsampled (area average) to a long side of
        :data:`~alignclip.methods.base.IMAGE_CONTEXT_SIDE` when larger, band by band so memory stays bounded."""

        def image() -> torch.Tensor:
            long = max(height, width)
            if long <= IMAGE_CONTEXT_SIDE:
                return region(0, height, 0, width)[None]
            out_h = max(1, round(height * IMAGE_CONTEXT_SIDE / long))
            out_w = max(1, round(width * IMAGE_CONTEXT_SIDE / long))
            step = max(1, (1 << 22) // width)  # rows per band: ~48 MB of float pixels at a time
            narrow = torch.cat(  # columns first, band by band: [1, 3, H, out_w]
                [
                    F.interpolate(
                        region(y, min(y + step, height), 0, width)[None],
                        size=(min(step, height - y), out_w),
                        mode="area",
                    )
                    for y in range(0, height, step)
                ],
                dim=2,
            )
            return F.interpolate(narrow, size=(out_h, out_w), mode="area")

        return image

    def _full_logits(self, region: Region, height: int, width: int) -> torch.Tensor:
        """All bands of :meth:`_logit_bands` in one ``[Q, H, W]``."""
        out = torch.empty(len(self.classes.queries), height, width, device=self.device)
        for r, band in self._logit_bands(region, height, width):
            out[:, r : r + band.shape[1]] = band
        return out

    @torch.inference_mode()
    def image_logits(self, img: torch.Tensor) -> torch.Tensor:
        """Count-averaged query logits ``[Q, H, W]`` of a preprocessed image ``[3, H, W]``."""
        _, height, width = img.shape
        return self._full_logits(lambda y1, y2, x1, x2: img[:, y1:y2, x1:x2], height, width)

    @torch.inference_mode()
    def predict(self, image: np.ndarray, strip_rows: int = 512, keep_logits: bool = True) -> Prediction:
        """Segment an RGB uint8 image ``[H0, W0, 3]``: labels at the input size and (optionally) the logits.

        Pixels are normalised only for the windows being run, and windows stream in bands of rows
        (:func:`~alignclip.ops.windows.stream_windows`). Without resize (``long_side=None`` or an image already at that
        size) and ``keep_logits=False``, each finished band becomes labels at once: memory is O(Q × crop × W) plus
        the uint8 image and the label map, whatever the height. Otherwise the logits are assembled at the
        processing size, and the final bilinear resize to the input size, softmax and argmax run in strips of
        ``strip_rows`` output rows.

        Args:
            image: ``[H0, W0, 3]`` uint8 RGB.
            strip_rows: output rows per strip of the final resize.
            keep_logits: return the ``[Q, H, W]`` logits in :attr:`Prediction.logits` (False: None, and bounded
                memory for any image size without resize; the labels are the same).
        """
        c = self.config
        resized = self._resized(image)
        h0, w0 = image.shape[:2]
        height, width = resized.shape[:2]
        region = self._normaliser(resized)
        labels = np.empty((h0, w0), dtype=label_dtype(self.classes.num_classes))

        def to_labels(rows: torch.Tensor) -> np.ndarray:  # [Q, r, W0] logits → [r, W0] labels
            probs = class_probabilities(rows, self.query_to_class, self.classes.num_classes, c.logit_scale)
            return predict_labels(probs, c.prob_thd, c.bg_idx).cpu().numpy()

        if not keep_logits and (height, width) == (h0, w0):
            for r, band in self._logit_bands(region, height, width):
                labels[r : r + band.shape[1]] = to_labels(band)
            return Prediction(labels=self._corrected(labels), logits=None)
        logits = self._full_logits(region, height, width)
        for r in range(0, h0, strip_rows):
            labels[r : r + min(strip_rows, h0 - r)] = to_labels(
                bilinear_rows(logits, (h0, w0), r, min(r + strip_rows, h0))
            )
        return Prediction(labels=self._corrected(labels), logits=logits if keep_logits else None)

    def _corrected(self, labels: np.ndarray) -> np.ndarray:
        """The final label map, corrected by the encoder when it has a correction (CorrCLIP's map correction)."""
        if self.encoder is None or self.encoder.correct_labels is None:
            return labels
        return self.encoder.correct_labels(self.encoder_context, labels)

    def segment(self, image: np.ndarray) -> np.ndarray:
        """Label map ``[H0, W0]`` of an RGB uint8 image (bounded memory: the logits are not kept)."""
        return self.predict(image, keep_logits=False).labels


def build_segmentor(
    preset: str = "alignclip-d",
    dataset: str | None = None,
    classes: Sequence[str] | None = None,
    smoke: bool = False,
    **overrides,
) -> Segmentor:
    """One call from a preset, a dataset name or class names, and config overrides to a ready segmentor.

    Args:
        preset: method preset (``alignclip-d``, ``segearth-ov+sga``, ...).
        dataset: a dataset manifest name: its classes (unless ``classes`` is given), threshold, background index
            and Table 6's α and β.
        classes: class names (synonyms separated by commas); required when ``dataset`` is None.
        smoke: tiny random models (pipeline checks).
        overrides: any :class:`~alignclip.pipeline.config.SegmentorConfig` field.
    """
    config = build_config(preset, dataset=dataset, smoke=smoke, **overrides)
    if classes is None:
        if dataset is None:
            raise ConfigError("give class names (classes=[...]) or a dataset name (dataset='potsdam')")
        classes = list(load_manifest(dataset).classes)
    return Segmentor(config, classes)
