"""Named CLIP backbones: the remote-sensing CLIPs and the general CLIPs the backbone study compares.

A name (``remoteclip-b32``, ``georsclip-l14``, ...) fixes the open_clip architecture the weights fit, their published
source, and the tiny random architecture standing in for it in the smoke profile. ``create_clip`` accepts these names
wherever it accepts an open_clip model name; ``pretrained="default"`` then means the published weights:

- an open_clip pretrained tag (OpenAI, MetaCLIP): read from the Hugging Face cache by open_clip;
- a file published on the Hugging Face Hub (RemoteCLIP, GeoRSCLIP): read from the Hugging Face cache;
- a file published elsewhere (SkyCLIP, in a zip of the SkyScript repository's release): passed as a local path.

Activation: the remote-sensing CLIPs are state dicts, which do not record their activation; they are built as their
authors' loading code and SegEarth-OV's build them (the plain ``ViT-B-32`` / ``ViT-L-14`` architectures, GELU).
``ViT-B-32-quickgelu`` with ``pretrained=FILE`` builds the same weights with QuickGELU (decision D56).

Upsampler: SegEarth-OV's JBU checkpoint was trained on CLIP ViT-B/16's features; only ``clip-b16`` has one
(``Backbone.jbu``). :func:`alignclip.pipeline.config.build_config` runs the others with ``upsampler="none"`` unless a
checkpoint is given, and says so.
"""

from __future__ import annotations

from dataclasses import dataclass

from alignclip.errors import WeightsNotFoundError

__all__ = ["BACKBONES", "Backbone", "backbone_weights", "list_backbones", "resolve_backbone"]


@dataclass(frozen=True)
class Backbone:
    """One named CLIP backbone.

    Attributes:
        name: the package's name (``remoteclip-b32``).
        label: how tables print it (``RemoteCLIP ViT-B/32``).
        family: the weights' family (``OpenAI CLIP``, ``MetaCLIP``, ``RemoteCLIP``, ``GeoRSCLIP``, ``SkyCLIP``).
        arch: the open_clip architecture the weights fit (``ViT-B-32``).
        tag: the open_clip pretrained tag of the weights, or None for a published file.
        hf_repo, hf_file: where a published file sits on the Hugging Face Hub (None: not on the Hub).
        source: the address a user gets the weights from.
        file_hint: the file name a user passes as ``--pretrained`` (published files).
        remote_sensing: trained on remote-sensing image-text pairs.
        jbu: a published JBU upsampler checkpoint exists for this backbone's features.
        stand_in: the tiny random architecture of the same patch size for the smoke profile.
    """

    name: str
    label: str
    family: str
    arch: str
    tag: str | None
    hf_repo: str | None
    hf_file: str | None
    source: str
    file_hint: str
    remote_sensing: bool
    jbu: bool
    stand_in: str

    @property
    def patch_size(self) -> int:
        return int(self.arch.split("-")[2])


def _openclip(name, label, family, arch, tag, source, jbu=False):
    stand_in = {16: "tiny", 32: "tiny-b32", 14: "tiny-l14"}[int(arch.split("-")[2])]
    return Backbone(name, label, family, arch, tag, None, None, source, "", False, jbu, stand_in)


def _published(name, label, family, arch, hf_repo, hf_file, source, file_hint):
    stand_in = {32: "tiny-b32", 14: "tiny-l14"}[int(arch.split("-")[2])]
    return Backbone(name, label, family, arch, None, hf_repo, hf_file, source, file_hint, True, False, stand_in)


_OPEN_CLIP = "https://github.com/mlfoundations/open_clip"
_REMOTECLIP = "https://huggingface.co/chendelong/RemoteCLIP"
_GEORSCLIP = "https://huggingface.co/Zilun/GeoRSCLIP"
_SKYCLIP = "https://github.com/wangzhecheng/SkyScript"

BACKBONES: dict[str, Backbone] = {
    b.name: b
    for b in (
        _openclip("clip-b16", "CLIP ViT-B/16", "OpenAI CLIP", "ViT-B-16", "openai", _OPEN_CLIP, jbu=True),
        _openclip("clip-l14", "CLIP ViT-L/14", "OpenAI CLIP", "ViT-L-14", "openai", _OPEN_CLIP),
        _openclip(
            "metaclip-b16", "MetaCLIP ViT-B/16", "MetaCLIP", "ViT-B-16-quickgelu", "metaclip_fullcc", _OPEN_CLIP
        ),
        _published(
            "remoteclip-b32", "RemoteCLIP ViT-B/32", "RemoteCLIP", "ViT-B-32", "chendelong/RemoteCLIP",
            "RemoteCLIP-ViT-B-32.pt", _REMOTECLIP, "RemoteCLIP-ViT-B-32.pt",
        ),
        _published(
            "remoteclip-l14", "RemoteCLIP ViT-L/14", "RemoteCLIP", "ViT-L-14", "chendelong/RemoteCLIP",
            "RemoteCLIP-ViT-L-14.pt", _REMOTECLIP, "RemoteCLIP-ViT-L-14.pt",
        ),
        _published(
            "georsclip-b32", "GeoRSCLIP ViT-B/32", "GeoRSCLIP", "ViT-B-32", "Zilun/GeoRSCLIP",
            "ckpt/RS5M_ViT-B-32.pt", _GEORSCLIP, "RS5M_ViT-B-32.pt",
        ),
        _published(
            "georsclip-l14", "GeoRSCLIP ViT-L/14", "GeoRSCLIP", "ViT-L-14", "Zilun/GeoRSCLIP",
            "ckpt/RS5M_ViT-L-14.pt", _GEORSCLIP, "RS5M_ViT-L-14.pt",
        ),
        _published(
            "skyclip-b32", "SkyCLIP ViT-B/32", "SkyCLIP", "ViT-B-32", None, None, _SKYCLIP,
            "SkyCLIP_ViT_B32_top50pct/epoch_20.pt",
        ),
        _published(
            "skyclip-l14", "SkyCLIP ViT-L/14", "SkyCLIP", "ViT-L-14", None, None, _SKYCLIP,
            "SkyCLIP_ViT_L14_top30pct_filtered_by_CLIP_laion_RS/epoch_20.pt",
        ),
    )
}  # fmt: skip


def list_backbones() -> list[str]:
    """The named backbones, in the study's order (general CLIPs first)."""
    return list(BACKBONES)


def resolve_backbone(name: str) -> Backbone | None:
    """The named backbone ``name`` (case-insensitive), or None when it is an open_clip name or a config file."""
    return BACKBONES.get(str(name).lower())


def _hf_cached(repo: str, filename: str) -> str | None:
    """The local path of a Hugging Face Hub file in the cache, or None (never downloads)."""
    from huggingface_hub import try_to_load_from_cache

    path = try_to_load_from_cache(repo, filename)
    return path if isinstance(path, str) else None


def backbone_weights(backbone: Backbone, pretrained: str) -> str:
    """What ``create_clip`` loads for ``backbone`` given ``pretrained``: ``"default"`` becomes the open_clip tag or
    the cached published file; a path, a tag or ``"none"`` pass through.

    Raises:
        WeightsNotFoundError: ``"default"`` and the published file is not in the Hugging Face cache (or is not on the
            Hub): the message names the file and the two fixes.
    """
    if pretrained != "default":
        return pretrained
    if backbone.tag is not None:
        return backbone.tag
    if backbone.hf_repo is not None:
        path = _hf_cached(backbone.hf_repo, backbone.hf_file)
        if path is not None:
            return path
        raise WeightsNotFoundError(
            f"{backbone.label} weights ({backbone.hf_repo}/{backbone.hf_file}) are not in the Hugging Face cache; on a "
            f'machine with internet run `python -c "from huggingface_hub import hf_hub_download; '
            f"hf_hub_download('{backbone.hf_repo}', '{backbone.hf_file}')\"` and copy ~/.cache/huggingface, "
            f"or pass --pretrained /path/to/{backbone.file_hint}"
        )
    raise WeightsNotFoundError(
        f"{backbone.label} weights are published as a file only ({backbone.source}, release {backbone.file_hint}); "
        f"download and unzip it, then pass --pretrained /path/to/{backbone.file_hint}"
    )
