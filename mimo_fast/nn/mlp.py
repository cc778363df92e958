"""Multi-layer perceptrons of the GNN detectors.

``MLP(sizes)`` is ``Linear(sizes[0], sizes[1]) -> ReLU -> ... -> Linear(sizes[-2], sizes[-1])``:
ReLU after every hidden layer, none after the output layer (the papers' message MLP
``D``/``P``, eq. 16 / E2E eq. 1, and readout ``R``, eq. 18 / E2E eq. 3a). Two options
change the activations (the parameters stay the same): ``hidden_act="none"`` drops the
hidden ReLUs, so the MLP is an affine map (the readout of the GEPNet and GNN-detector
authors' code), and ``out_act="relu"`` adds a ReLU after the output layer (their message
MLP). Its layers are ``nn.Linear``, whose ``weight`` is ``(out, in)``: the layout
:func:`mimo_fast.ops.mpnn_message_sum` takes for ``w1``, ``w2``, ``w3``.
"""
from __future__ import annotations

from typing import Sequence

from torch import Tensor, nn

#: activations an MLP takes after its hidden layers and after its output layer
ACTS = ("relu", "none")


def check_sizes(name: str, sizes, length=None) -> tuple:
    """``sizes`` as a tuple of positive ints (``length`` of them when given), or a
    ``ValueError`` naming the argument."""
    try:
        out = tuple(sizes)
    except TypeError:
        raise ValueError(f"{name} must be a sequence of positive ints, got {sizes!r}") from None
    if not out or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in out):
        raise ValueError(f"{name} must be a sequence of positive ints, got {sizes!r}")
    if length is not None and len(out) != length:
        raise ValueError(f"{name} must have {length} entries, got {len(out)} ({sizes!r})")
    return out


def check_act(name: str, v) -> str:
    """``v`` if it is one of :data:`ACTS`, else a ``ValueError`` naming the argument."""
    if not isinstance(v, str) or v not in ACTS:
        raise ValueError(f"{name} must be one of {ACTS}, got {v!r}")
    return v


class MLP(nn.Module):
    """Fully connected layers with ReLU after each hidden layer (by default).

    Args:
        sizes: ``(in, hidden_1, ..., out)``, at least two entries.
        hidden_act: ``"relu"`` (default) or ``"none"`` (no activation: an affine map).
        out_act: ``"none"`` (default) or ``"relu"`` after the output layer.
    """

    def __init__(self, sizes: Sequence[int], hidden_act: str = "relu", out_act: str = "none"):
        super().__init__()
        sizes = check_sizes("sizes", sizes)
        if len(sizes) < 2:
            raise ValueError(f"sizes must have at least 2 entries (in, out), got {sizes!r}")
        self.sizes = sizes
        self.hidden_act, self.out_act = check_act("hidden_act", hidden_act), check_act("out_act", out_act)
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))

    def forward(self, x: Tensor) -> Tensor:
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if (self.hidden_act if i < last else self.out_act) == "relu":
                x = x.relu()
        return x

    def flat_parameters(self) -> list:
        """``[w1, b1, w2, b2, ...]`` in the order the fused ops take them."""
        out = []
        for layer in self.layers:
            out += [layer.weight, layer.bias]
        return out

    def extra_repr(self) -> str:
        out = "sizes=" + "-".join(str(s) for s in self.sizes)
        if self.hidden_act != "relu":
            out += f", hidden_act={self.hidden_act!r}"
        if self.out_act != "none":
            out += f", out_act={self.out_act!r}"
        return out


__all__ = ["MLP", "ACTS", "check_sizes", "check_act"]
