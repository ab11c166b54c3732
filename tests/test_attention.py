import pytest
import torch

from alignclip.errors import ConfigError
from alignclip.ops.attention import (
    ATTENTION_MODES,
    attention_weights,
    modified_attention,
    naclip_bias,
)


def _qkv(b=2, h=3, grid=(3, 4), d=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    L = 1 + grid[0] * grid[1]
    return [torch.randn(b, h, L, d, generator=g, dtype=torch.float64) for _ in range(3)]


def _sm(a, b):
    return torch.softmax(a @ b.transpose(-1, -2) / a.shape[-1] ** 0.5, dim=-1)


@pytest.mark.parametrize("mode", ATTENTION_MODES)
def test_fast_path_equals_explicit_weights(mode):
    q, k, v = _qkv()
    fast = modified_attention(q, k, v, mode, grid_hw=(3, 4))
    ref = attention_weights(q, k, v, mode, grid_hw=(3, 4)) @ v
    torch.testing.assert_close(fast, ref, rtol=1e-9, atol=1e-9)


def test_each_mode_against_its_definition():
    q, k, v = _qkv()
    torch.testing.assert_close(modified_attention(q, k, v, "vanilla"), _sm(q, k) @ v)
    torch.testing.assert_close(modified_attention(q, k, v, "maskclip"), v)
    torch.testing.assert_close(modified_attention(q, k, v, "clearclip"), _sm(q, q) @ v)
    torch.testing.assert_close(modified_attention(q, k, v, "sclip"), (_sm(q, q) + _sm(k, k)) @ v)
    torch.testing.assert_close(modified_attention(q, k, v, "segearth"), (_sm(q, q) + _sm(k, k) + _sm(v, v)) @ v)


def test_segearth_rows_sum_to_three_sclip_to_two():
    q, k, v = _qkv()
    torch.testing.assert_close(
        attention_weights(q, k, v, "segearth").sum(-1), torch.full(q.shape[:-1], 3.0, dtype=q.dtype)
    )
    torch.testing.assert_close(
        attention_weights(q, k, v, "sclip").sum(-1), torch.full(q.shape[:-1], 2.0, dtype=q.dtype)
    )


def test_naclip_bias_hand_values():
    bias = naclip_bias((2, 2), std=1.0)
    assert bias.shape == (5, 5)
    assert torch.all(bias[0] == 0) and torch.all(bias[:, 0] == 0)
    # patch (0,0) to itself 1, to (0,1) exp(-1/2), to (1,1) exp(-1)
    assert bias[1, 1] == 1.0
    assert torch.isclose(bias[1, 2], torch.exp(torch.tensor(-0.5)))
    assert torch.isclose(bias[1, 4], torch.exp(torch.tensor(-1.0)))


def test_naclip_uses_kk_plus_bias():
    q, k, v = _qkv(grid=(2, 2))
    bias = naclip_bias((2, 2), 5.0, dtype=q.dtype)
    ref = torch.softmax(k @ k.transpose(-1, -2) / k.shape[-1] ** 0.5 + bias, -1) @ v
    torch.testing.assert_close(modified_attention(q, k, v, "naclip", grid_hw=(2, 2), naclip_std=5.0), ref)


def test_unknown_mode_lists_choices():
    q, k, v = _qkv()
    with pytest.raises(ConfigError, match="segearth"):
        modified_attention(q, k, v, "bogus")
