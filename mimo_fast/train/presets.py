"""Published training recipes as ``mimo-fast train --preset NAME``.

Each preset is a set of defaults for the ``train`` command's options (an option given on
the command line wins) and for the model's constructor options (``--model-option`` wins).
The values are those of the authors' published code and logs; where a recipe names no
value (a learning-rate schedule, say) the preset says what it uses instead, in ``note``.

``--preset published`` picks the model's own recipe (``gepnet`` -> ``gepnet-published``).
"""
from __future__ import annotations

import dataclasses
from typing import Optional


@dataclasses.dataclass(frozen=True)
class Preset:
    name: str
    model: str
    #: where the numbers come from
    source: str
    #: defaults of the train command's options (argparse ``dest`` names)
    args: dict
    #: defaults of the model's constructor options
    model_options: dict = dataclasses.field(default_factory=dict)
    #: what the recipe leaves open and what the preset uses there
    note: str = ""

    def defaults(self) -> dict:
        """argparse defaults: the train options plus ``model_option`` pairs."""
        return dict(self.args, model_option=list(self.model_options.items()))


#: a learning rate that never drops (the recipe names no schedule): plateau patience past any run
_NEVER = 10 ** 9

PRESETS = {p.name: p for p in (
    Preset(
        name="gepnet-published", model="gepnet",
        source="GEPNet authors' code and logs (Kosasih et al.), 8x8 16-QAM",
        # Nt drawn from {4, 8} with P proportional to Nt (P(8) = 2/3), SNR per Nt; 100,000 fresh
        # samples an epoch (781.25 batches of 128), 500 epochs (best epoch 473, ~47M samples);
        # ReduceLROnPlateau(factor 0.91, patience 0) stepped on the validation loss every 50 epochs
        args=dict(nr=8, nt=8, nt_min=4, nt_step=4, nt_dist="proportional", mod="qam16",
                  snr_range=[(4, 8.0, 23.5), (8, 10.0, 30.5)],
                  batch=128, lr=1e-3, dtype="float64", steps=390_625, val_every=781,
                  lr_factor=0.91, patience=0, plateau_every=50),
        model_options=dict(iterations=10, rounds=2, damping=0.7, node_size=8, loss="final"),
        note="Validation every 781 steps = one epoch of 100,000 samples; the plateau scheduler sees "
             "the 1st, 51st, 101st, ... of them, as the authors' code validates every 50 epochs. Their "
             "validation loss is taken at fixed test SNRs per user count, ours on the training law. "
             "Loss: the final iteration's cross-entropy; the authors sum it over nodes and batch one "
             "user count at a time, ours averages over the present users of a mixed batch, which "
             "weights a sample by its user count as theirs does."),
    Preset(
        name="gnn-published", model="gnn",
        source="GNN detector authors' code (Scotti et al.), 64x32 16-QAM",
        # a fixed set of 300,000 samples, batch 64 (4,688 batches an epoch), 500 epochs (best 402)
        args=dict(nr=64, nt=32, mod="qam16", snr_min=12.0, snr_max=17.5, train_set=300_000,
                  batch=64, lr=1e-4, weight_decay=1e-5, steps=2_344_000, val_every=4_688,
                  patience=_NEVER),
        model_options=dict(rounds=10),
        note="The recipe names no learning-rate schedule: constant lr 1e-4. A batch of the fixed "
             "set keeps its samples across epochs (only the batch order is reshuffled, "
             "mimo_fast/train/data.py)."),
    Preset(
        name="remimo-published", model="remimo",
        source="RE-MIMO paper Sec. V-E and its authors' code, Nr 64, Nt 16..32",
        # 650,000 steps x 256, lr 1e-4, ReduceLROnPlateau(factor 0.91, patience 0) every 5,000
        # steps; Nt over every integer 16..32 with P proportional to Nt; validation on 16 and 32
        args=dict(nr=64, nt=32, nt_min=16, nt_step=1, nt_dist="proportional", mod="qam16",
                  snr_min=10.0, snr_max=17.0, snr_per_user=0.125, val_nt=[16, 32],
                  batch=256, lr=1e-4, lr_factor=0.91, patience=0, val_every=5_000, steps=650_000),
        note="The per-Nt SNR ranges are not published: the preset uses the range of the shipped "
             "run (10-17 dB at 32 users, moving 0.125 dB per user). The model options (size) are "
             "left at the constructor's defaults."),
)}


def find(name: str, model: str) -> Optional[Preset]:
    """The preset ``name`` for ``model`` (``"published"``: the model's own), or a
    ``ValueError`` listing the presets."""
    if name == "published":
        name = f"{model}-published"
    p = PRESETS.get(name)
    if p is None:
        have = ", ".join(sorted(PRESETS))
        raise ValueError(f"--preset {name!r}: no such preset for {model} (presets: {have}; "
                         f"'published' = the model's own)")
    if p.model != model:
        raise ValueError(f"--preset {name!r} is the recipe of {p.model}, not {model}")
    return p


__all__ = ["Preset", "PRESETS", "find"]
