"""The value checks' GPU screen (one fused pass, one sync per op call): it must flag every
bad input and pass clean ones; a false alarm (a 2-norm overflowing on huge finite values)
only costs the exact per-tensor scan, which then passes. The screen is device-agnostic
code, so its logic is tested here on CPU tensors; on a GPU the same tests also run there."""
import pytest
import torch

from mimo_fast.ops import validate as V

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _args(device, dtype=torch.float32):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 5, generator=g, dtype=dtype).to(device)
    z = torch.complex(torch.randn(3, 2, generator=g), torch.randn(3, 2, generator=g)).to(device)
    v = (torch.rand(4, generator=g, dtype=dtype) + 0.1).to(device)
    return x, z, v


@pytest.mark.parametrize("device", DEVICES)
def test_screen_passes_clean_inputs(device):
    x, z, v = _args(device)
    assert V._screen_torch([("x", x), ("z", z), ("v", v)], [("v", v, True)])
    assert V._screen_passes([("x", x), ("z", z), ("v", v)], [("v", v, True)])
    assert V._screen_passes([("empty", x[:0])], [])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_screen_flags_nonfinite(device, bad):
    x, z, v = _args(device)
    x[2, 3] = bad
    assert not V._screen_passes([("x", x), ("z", z)], [])
    z2 = z.clone()
    z2[1, 0] = complex(0.0, bad)
    assert not V._screen_passes([("z", z2)], [])
    with pytest.raises(ValueError, match=r"op: x has a non-finite value .* at index \(2, 3\)"):
        V.values("op", [("z", z), ("x", x)])


@pytest.mark.parametrize("device", DEVICES)
def test_screen_flags_variances(device):
    x, z, v = _args(device)
    v0 = v.clone()
    v0[1] = 0.0
    assert V._screen_passes([("v", v0)], [("v", v0, False)])      # >= 0 holds
    assert not V._screen_passes([("v", v0)], [("v", v0, True)])   # > 0 does not
    with pytest.raises(ValueError, match=r"op: v must be > 0 everywhere, got 0.0 at index \(1,\)"):
        V.values("op", [("v", v0)], [("v", v0, True)])


@pytest.mark.parametrize("device", DEVICES)
def test_false_alarm_falls_back_to_exact_scan(device):
    huge = torch.full((8,), 3e38, dtype=torch.float32, device=device)   # finite; its 2-norm overflows
    assert not V._screen_torch([("huge", huge)], [])
    assert V._screen_passes([("huge", huge)], []) == (device == "cuda" and V._ext.C_CUDA is not None)
    V.values("op", [("huge", huge)])                                  # the exact scan passes it


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU: the CUDA screen kernel")
def test_cuda_screen_kernel_matches_torch_screen():
    x, z, v = _args("cuda")
    args = [("x", x), ("z", z), ("v", v)]
    assert V._screen_kernel(args, [("v", v, True)]) is True
    v[0] = -1.0
    assert V._screen_kernel(args, [("v", v, True)]) is False
    assert V._screen_kernel(args, [("v", v, True)]) == V._screen_torch(args, [("v", v, True)])
    assert V._screen_kernel([("xt", x.t())], []) is None          # non-contiguous: torch path
