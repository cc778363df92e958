"""Run each mimo_fast op once, forward and backward, on the backend chosen for the CPU."""
import warnings

import torch

import mimo_fast.ops as ops
from mimo_fast.ops import registry

warnings.simplefilter("ignore", ops.BackendFallbackWarning)
g = torch.Generator().manual_seed(0)

# MPNN message-and-sum: 4 graphs of 8 nodes, 8 features, 2 edge attributes
B, N, F, E, H1, H2, Fo = 4, 8, 8, 2, 16, 8, 8
node = torch.randn(B, N, F, generator=g, requires_grad=True)
edge = torch.randn(B, N, N, E, generator=g)
w = [torch.randn(*s, generator=g) * 0.3 for s in [(H1, 2 * F + E), (H1,), (H2, H1), (H2,), (Fo, H2), (Fo,)]]
mask = torch.ones(B, N, dtype=torch.bool)
mask[0, 5:] = False
out = ops.mpnn_message_sum(node, edge, *w, mask)
out.square().sum().backward()
print(f"mpnn_message_sum: out {tuple(out.shape)}, |d/dnode| = {node.grad.norm():.4f}, "
      f"backend {registry.resolve('mpnn_message_sum', '', (node, edge)).name}")

# EP LMMSE step on a real-equivalent 8x8 system at noise variance 0.1
Hr = torch.randn(64, 16, 16, generator=g) / 4
gram = Hr.mT @ Hr / 0.1
rhs = torch.randn(64, 16, generator=g)
lam = torch.full((64, 16), 1.0, requires_grad=True)
mean, var = ops.ep_lmmse(gram, rhs, lam, torch.zeros(64, 16))
(mean.sum() + var.sum()).backward()
print(f"ep_lmmse: mean {tuple(mean.shape)}, var in [{var.min():.4f}, {var.max():.4f}], |d/dlam| = {lam.grad.norm():.4f}")

# One AMP step, first iteration (z_prev = y)
B, M, N = 16, 32, 16
H = torch.randn(B, M, N, dtype=torch.complex64, generator=g) / M ** 0.5
y = torch.randn(B, M, dtype=torch.complex64, generator=g)
x = torch.zeros(B, N, dtype=torch.complex64)
v = torch.ones(B, N)
r, Sigma, z, V = ops.amp_step(H, y, x, v, y, torch.zeros(B, M), 0.1)
print(f"amp_step: r {tuple(r.shape)}, Sigma mean {Sigma.mean():.4f}, V mean {V.mean():.4f}")
