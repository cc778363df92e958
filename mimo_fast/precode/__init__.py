"""Downlink precoding (Guo & Yang, "A Model-based GNN for Learning Precoding"; docs/precoding.md):
closed-form MRT/ZF/RZF, WMMSE (``mimo_fast.precode.wmmse.wmmse``), SE/EE metrics, the Vanilla-GNN and the Model-GNN;
the EE problem (``mimo_fast.precode.energy``: ZF-Dinkelbach, Lagrangian) and the EE Model-GNN."""
from mimo_fast.precode.classical import mrt, rzf, zf
from mimo_fast.precode.energy import zf_dinkelbach
from mimo_fast.precode.gnn import VanillaGNN
from mimo_fast.precode.metrics import (draw_channels, ee, noise_var, power_normalize, rates, sum_se)
from mimo_fast.precode.model_gnn import ModelGNN, ModelGNNEE

__all__ = ["mrt", "zf", "rzf", "VanillaGNN", "ModelGNN", "ModelGNNEE", "zf_dinkelbach", "draw_channels", "noise_var",
           "rates", "sum_se", "ee", "power_normalize"]
