"""Write the shared tiny random weights that the parity data under tests/data/parity/ were produced with.

    python scripts/parity_weights.py OUT_DIR

Writes, from the package's own deterministic random models (so the tests rebuild the same weights in memory):
- ``clip_tiny_b16.pt``: the ``tiny-b16`` CLIP (ViT with ViT-B/16's 12 layers and patch 16, width 128, 2 heads of 64,
  QuickGELU) as a plain state dict in OpenAI's key layout, which OpenAI's ``clip.load(path, jit=False)`` and the
  authors' vendored copies of it read (``build_model`` infers the heads as width // 64);
- ``dino_tiny_b8.pth`` / ``dino_tiny_b16.pth``: the ``tiny_dino_b8`` / ``tiny_dino_b16`` VFMs (DINO's ViT layout:
  embed 128, depth 12, 2 heads, patch 8 / 16) with DINO's key names (timm's ViT uses the same ones);
- ``sam_tiny_1024.pth``: the ``tiny_sam_1024`` VFM (SAM's image encoder at its native 1024², patch 16, embed 96,
  depth 2, 12 heads, window 14, last block global) in segment_anything's ``ImageEncoderViT`` key layout (timm's
  ``mlp.fc1``/``mlp.fc2`` are its ``mlp.lin1``/``mlp.lin2``); its digest is that of the package's (timm) state dict;
- ``weights.json``: each file's tensor digest (:func:`state_digest`) and per-tensor moments (L1 and squared L2
  norms), which the parity tests check: the exact digest, or the moments within 1e-5 (the tiny VFMs' truncated-normal
  initialisation goes through a vectorised ``erfinv`` whose last bits differ between CPU instruction sets, AVX2 and
  AVX-512, so the same seed gives weights equal to the last ulp only on the same kind of CPU).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from alignclip.models.clip import create_clip, state_digest
from alignclip.models.vfm import create_vfm

CLIP_NAME = "tiny-b16"
VFMS = {"dino_tiny_b8.pth": "tiny_dino_b8", "dino_tiny_b16.pth": "tiny_dino_b16"}
SAMS = {"sam_tiny_1024.pth": "tiny_sam_1024"}  # written in segment_anything's ImageEncoderViT layout


def clip_state() -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in create_clip(CLIP_NAME, "none").model.state_dict().items()}


def vfm_state(name: str) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in create_vfm(name, "none").model.state_dict().items()}


def sam_encoder_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A timm SAM state dict in segment_anything's ``ImageEncoderViT`` key layout (only the MLP names differ)."""
    return {k.replace(".mlp.fc1.", ".mlp.lin1.").replace(".mlp.fc2.", ".mlp.lin2."): v for k, v in state.items()}


def state_moments(state: dict[str, torch.Tensor]) -> dict[str, list[float]]:
    """``{tensor name: [L1 norm, squared L2 norm]}`` in float64 (machine-independent to ~1e-7 relative)."""
    return {
        k: [float(v.double().abs().sum()), float(v.double().square().sum())]
        for k, v in sorted(state.items())
        if v.is_floating_point()
    }


def entry(model: str, state: dict[str, torch.Tensor]) -> dict:
    return {"package_model": model, "digest": state_digest(state), "moments": state_moments(state)}


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    digests = {}
    state = clip_state()
    torch.save(state, out / "clip_tiny_b16.pt")
    digests["clip_tiny_b16.pt"] = entry(f"create_clip('{CLIP_NAME}', 'none')", state)
    for file, name in VFMS.items():
        state = vfm_state(name)
        torch.save(state, out / file)
        digests[file] = entry(f"create_vfm('{name}', 'none')", state)
    for file, name in SAMS.items():
        state = vfm_state(name)
        torch.save(sam_encoder_state(state), out / file)
        digests[file] = entry(f"create_vfm('{name}', 'none')", state)
    (out / "weights.json").write_text(json.dumps(digests, indent=2) + "\n")
    print(f"wrote {', '.join(digests)} to {out}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python scripts/parity_weights.py OUT_DIR")
    main(Path(sys.argv[1]))
