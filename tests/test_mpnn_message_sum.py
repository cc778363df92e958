"""mpnn_message_sum: every backend that can run here against the loop oracle, plus
gradcheck, opcheck, torch.compile, equivariance, hypothesis and bad input."""
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import mimo_fast.ops as ops
from op_checks import check_compile, check_gradcheck, check_grads, check_values
from op_samples import opcheck_samples, backends_for, mpnn_oracle, mpnn_sample, mpnn_samples

OP = "mpnn_message_sum"
FN = ops.mpnn_message_sum


def cases(dtypes=(torch.float32, torch.float64)):
    return [pytest.param(s, b, id=f"{s.name}-{b}") for d in dtypes for s in mpnn_samples(d)
            for b in backends_for(OP, s)]


@pytest.mark.parametrize("sample,backend", cases())
def test_values(sample, backend):
    check_values(FN, mpnn_oracle, sample, backend)


@pytest.mark.parametrize("sample,backend", cases())
def test_gradients(sample, backend):
    check_grads(FN, mpnn_oracle, sample, backend)


@pytest.mark.parametrize("sample,backend", cases((torch.float64,)))
def test_gradcheck(sample, backend):
    check_gradcheck(FN, sample, backend)


@pytest.mark.parametrize("sample", opcheck_samples(mpnn_samples(torch.float64))
                         + [s for s in mpnn_samples(torch.float64) if s.name.startswith("relu-masked")], ids=repr)
def test_opcheck(sample):
    args = [a.detach().clone().requires_grad_() if a is not None and a.dtype != torch.bool else a
            for a in sample.args]
    torch.library.opcheck(torch.ops.mimo_fast.mpnn_message_sum.default, (*args, sample.kwargs["out_act"], ""))


@pytest.mark.parametrize("sample,backend", [c for c in cases((torch.float32,)) if "masked" in c.id])
def test_compile_fullgraph(sample, backend):
    check_compile(FN, sample, backend)


def test_masked_nodes_receive_zero_and_send_nothing():
    s = mpnn_sample("m", 2, 5, 3, 2, 6, 4, 3, torch.float64, mask=torch.tensor([[1, 0, 1, 1, 0], [1] * 5]).bool())
    out = FN(*s.args)
    assert (out[0, 1] == 0).all() and (out[0, 4] == 0).all()
    # dropping the masked nodes altogether gives the same outputs for the others
    keep = [0, 2, 3]
    node, edge, *w, _ = s.args
    sub = FN(node[:1, keep], edge[:1, keep][:, :, keep], *w)
    torch.testing.assert_close(out[0, keep], sub[0])


def test_permutation_equivariance():
    s = mpnn_sample("p", 2, 6, 3, 2, 8, 5, 4, torch.float64, mask=torch.tensor([[1, 1, 0, 1, 1, 1], [1] * 6]).bool())
    node, edge, *w, mask = s.args
    perm = torch.tensor([3, 0, 5, 1, 4, 2])
    out = FN(node, edge, *w, mask)
    out_p = FN(node[:, perm], edge[:, perm][:, :, perm], *w, mask[:, perm])
    torch.testing.assert_close(out_p, out[:, perm])


def test_single_node_gets_zero_messages():
    s = mpnn_sample("n1", 3, 1, 2, 2, 4, 4, 2, torch.float32)
    assert (FN(*s.args) == 0).all()


def test_empty_batch():
    s = mpnn_sample("b0", 0, 3, 2, 2, 4, 4, 2, torch.float32)
    assert FN(*s.args).shape == (0, 3, 2)


@settings(max_examples=20, deadline=None)
@given(B=st.integers(1, 3), N=st.integers(1, 6), F=st.integers(1, 4), E=st.integers(0, 3),
       H1=st.integers(1, 9), H2=st.integers(1, 9), Fo=st.integers(1, 4), seed=st.integers(0, 2**16),
       masked=st.booleans())
def test_hypothesis_shapes(B, N, F, E, H1, H2, Fo, seed, masked):
    mask = torch.rand(B, N, generator=torch.Generator().manual_seed(seed)) > 0.3 if masked else None
    s = mpnn_sample("h", B, N, F, E, H1, H2, Fo, torch.float64, seed=seed, mask=mask)
    for backend in backends_for(OP, s):
        check_values(FN, mpnn_oracle, s, backend)


# ------------------------------------------------------------------ bad input
def _args(**over):
    s = mpnn_sample("bad", 2, 3, 2, 1, 4, 3, 2, torch.float32)
    names = ["node", "edge", "w1", "b1", "w2", "b2", "w3", "b3", "mask"]
    args = dict(zip(names, s.args))
    args.update(over)
    return [args[n] for n in names]


BAD = [
    ("node", dict(node=torch.randn(2, 3)), ValueError, "node must be 3-D"),
    ("node-int", dict(node=torch.ones(2, 3, 2, dtype=torch.int64)), TypeError, "node must have dtype"),
    ("node-not-tensor", dict(node=[[1.0]]), TypeError, "node must be a torch.Tensor"),
    ("edge-shape", dict(edge=torch.randn(2, 3, 4, 1)), ValueError, "edge must have shape (B, N, N, E)"),
    ("edge-dtype", dict(edge=torch.randn(2, 3, 3, 1, dtype=torch.float64)), TypeError, "edge has dtype torch.float64"),
    ("w1-cols", dict(w1=torch.randn(4, 6)), ValueError, "w1 must have shape (H1, 2F+E)"),
    ("b1", dict(b1=torch.randn(5)), ValueError, "b1 must have shape (H1,)"),
    ("w2", dict(w2=torch.randn(3, 5)), ValueError, "w2 must have shape (H2, H1)"),
    ("w3", dict(w3=torch.randn(2, 4)), ValueError, "w3 must have shape (Fo, H2)"),
    ("b3", dict(b3=torch.randn(3)), ValueError, "b3 must have shape (Fo,)"),
    ("mask-dtype", dict(mask=torch.ones(2, 3)), TypeError, "mask must have dtype torch.bool"),
    ("mask-shape", dict(mask=torch.ones(2, 4, dtype=torch.bool)), ValueError, "mask must have shape (B, N)"),
    ("device", dict(w2=torch.randn(3, 4, device="meta")), ValueError, "w2 is on meta"),
    ("nan", dict(node=torch.tensor([[[0.0, 1], [2, float("nan")], [0, 0]]] * 2)), ValueError,
     "node has a non-finite value (nan) at index (0, 1, 1)"),
    ("inf-weight", dict(b2=torch.tensor([0.0, float("inf"), 0.0])), ValueError, "b2 has a non-finite value (inf) at index (1,)"),
]


@pytest.mark.parametrize("name,over,exc,msg", BAD, ids=[b[0] for b in BAD])
def test_bad_input(name, over, exc, msg):
    with pytest.raises(exc) as info:
        FN(*_args(**over))
    assert msg in str(info.value)
    assert "mpnn_message_sum" in str(info.value)
