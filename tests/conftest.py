import os
import tempfile
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# the text-embedding disk cache of the tests' process: a fresh folder, never the user's ~/.cache
os.environ["ALIGNCLIP_CACHE_DIR"] = tempfile.mkdtemp(prefix="alignclip-cache-")
os.environ["ALIGNCLIP_TEXT_CACHE"] = os.path.join(os.environ["ALIGNCLIP_CACHE_DIR"], "text")

# tests use tiny models, for which one thread is several times faster than two (and results are identical)
torch.set_num_threads(1)

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures"


@pytest.fixture
def fixtures_dir() -> Path:
    if not FIXTURES.is_dir():
        pytest.skip(f"real fixtures absent: {FIXTURES} (only on the project's machines, not in clones)")
    return FIXTURES


@pytest.fixture
def free_port() -> str:
    """A TCP port free on this machine now, for a torchrun rendezvous (a fixed port collides with another run's)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return str(sock.getsockname()[1])
