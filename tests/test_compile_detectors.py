"""torch.compile(det, fullgraph=True) of the detectors built on the ops (ep, gepnet, ampgnn,
oampnet2, lmmse): fullgraph=True fails on any graph break, so compiling at all shows one
graph; the compiled answer is the eager one. Plus a Python-float noise variance reaching an
op inside a compiled graph."""
import pytest
import torch

from mimo_fast import comm, detect, ops

DETECTORS = {"ep": {}, "lmmse": {}, "gepnet": dict(pretrained=False, iterations=3),
             "ampgnn": dict(pretrained=False, iterations=2), "oampnet2": dict(pretrained=False, layers=3)}


def _problem(B=4, nr=6, nt=3, order=16, snr=15.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    c = comm.qam(order)
    H = comm.rayleigh(B, nr, nt, g)
    idx = c.random_indices((B, nt), g)
    nv = comm.noise_var_from_snr(snr, nr, nt)
    y = comm.awgn((H @ c.indices_to_points(idx)[..., None])[..., 0], nv, g)
    return c, H, y, nv


def _make(name):
    c = _problem()[0]
    torch.manual_seed(0)
    return detect.make(name, c, **DETECTORS[name])


@pytest.mark.parametrize("name", DETECTORS)
def test_compiled_matches_eager(name):
    torch._dynamo.reset()
    _, H, y, nv = _problem()
    det = _make(name)
    compiled = torch.compile(det, fullgraph=True)
    with torch.no_grad():
        for noise in (torch.full((4,), nv), nv):        # a (B,) tensor and a Python float
            want, got = det(y, H, noise), compiled(y, H, noise)
            torch.testing.assert_close(got.logits, want.logits, rtol=1e-4, atol=1e-4)
            assert torch.equal(got.hard, want.hard)


def test_compiled_learned_detector_with_a_mask():
    torch._dynamo.reset()
    _, H, y, nv = _problem()
    det = _make("gepnet")
    mask = torch.tensor([True, False, True]).expand(4, 3)
    with torch.no_grad():
        want = det(y, H, nv, mask)
        got = torch.compile(det, fullgraph=True)(y, H, nv, mask)
    torch.testing.assert_close(got.logits, want.logits, rtol=1e-4, atol=1e-4)
    assert torch.equal(got.hard, want.hard)


def test_compiled_checks_still_refuse_bad_input():
    """Under compile the input checks are graph asserts: a NaN in H still raises."""
    torch._dynamo.reset()
    _, H, y, nv = _problem()
    compiled = torch.compile(_make("lmmse"), fullgraph=True)
    H = H.clone()
    H[1, 2, 0] = float("nan")
    with torch.no_grad(), pytest.raises(RuntimeError, match="H has a non-finite value"):
        compiled(y, H, nv)


def test_amp_step_takes_a_float_noise_variance_under_compile():
    torch._dynamo.reset()
    g = torch.Generator().manual_seed(1)
    H = comm.rayleigh(2, 5, 3, g)
    y = comm.complex_normal((2, 5), 1.0, g)
    x = torch.zeros(2, 3, dtype=torch.complex64)
    v, V_prev = torch.ones(2, 3), torch.zeros(2, 5)

    def step(H, y, x, v, V_prev):
        return ops.amp_step(H, y, x, v, y, V_prev, 0.3)

    for got, want in zip(torch.compile(step, fullgraph=True)(H, y, x, v, V_prev), step(H, y, x, v, V_prev)):
        torch.testing.assert_close(got, want)
