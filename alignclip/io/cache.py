"""The user's cache folder of the package, and file digests kept there.

Root: ``$ALIGNCLIP_CACHE_DIR`` if set, else ``$XDG_CACHE_HOME/alignclip``, else ``~/.cache/alignclip``. It holds
text embeddings (``text/``, :mod:`alignclip.pipeline.text_cache`) and the sha256 of weight files (``sha256/``), so a
second run does not hash a 600 MB checkpoint again: an entry is keyed by the file's real path, size and modification
time, so any change of the file is hashed anew.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from alignclip.io.files import atomic_write

__all__ = ["cache_root", "cached_file_sha256", "file_sha256"]


def cache_root() -> Path:
    """The package's cache folder (see the module docstring); it may not exist yet."""
    env = os.environ.get("ALIGNCLIP_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "alignclip"


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def cached_file_sha256(path: str | os.PathLike) -> str:
    """:func:`file_sha256`, read from the cache when the same file (path, size, mtime) was hashed before."""
    real = Path(path).resolve()
    st = real.stat()
    key = hashlib.sha256(f"{real}\0{st.st_size}\0{st.st_mtime_ns}".encode()).hexdigest()
    entry = cache_root() / "sha256" / key
    try:
        text = entry.read_text().strip()
        if len(text) == 64 and all(c in "0123456789abcdef" for c in text):
            return text
    except OSError:  # no entry yet (or an unreadable one): hash the file
        pass
    digest = file_sha256(real)
    try:
        atomic_write(entry, lambda tmp: tmp.write_text(digest + "\n"), overwrite=True)
    except OSError:  # a read-only cache costs only the next run's hashing
        pass
    return digest
