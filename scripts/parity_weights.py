"""Write the shared tiny random weights that the parity data under tests/data/parity/ were produced with.

    python scripts/parity_weights.py OUT_DIR

Writes, from the package's own deterministic random models (so the tests rebuild the same weights in memory):
- ``clip_tiny_b16.pt``: the ``tiny-b16`` CLIP (ViT with ViT-B/16's 12 layers and patch 16, width 128, 2 heads of 64,
  QuickGELU) as a plain state dict in OpenAI's key layout, which OpenAI's ``clip.load(path, jit=False)`` and the
  authors' vendored copies of it read (``build_model`` infers the heads as width // 64);
- ``dino_tiny_b8.pth`` / ``dino_tiny_b16.pth``: the ``tiny_dino_b8`` / ``tiny_dino_b16`` VFMs (DINO's ViT layout:
  embed 128, depth 12, 2 heads, patch 8 / 16) with DINO's key names (timm's ViT uses the same ones);
- ``weights.json``: each file's tensor digest (:func:`state_digest`), which the parity tests check.
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


def clip_state() -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in create_clip(CLIP_NAME, "none").model.state_dict().items()}


def vfm_state(name: str) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in create_vfm(name, "none").model.state_dict().items()}


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    digests = {}
    state = clip_state()
    torch.save(state, out / "clip_tiny_b16.pt")
    digests["clip_tiny_b16.pt"] = {
        "package_model": f"create_clip('{CLIP_NAME}', 'none')",
        "digest": state_digest(state),
    }
    for file, name in VFMS.items():
        state = vfm_state(name)
        torch.save(state, out / file)
        digests[file] = {"package_model": f"create_vfm('{name}', 'none')", "digest": state_digest(state)}
    (out / "weights.json").write_text(json.dumps(digests, indent=2) + "\n")
    print(f"wrote {', '.join(digests)} to {out}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python scripts/parity_weights.py OUT_DIR")
    main(Path(sys.argv[1]))
