"""Training of the learned detectors: on-the-fly data (:mod:`~mimo_fast.train.data`), the
loop with validation, plateau scheduler and checkpoints (:mod:`~mimo_fast.train.loop`,
:mod:`~mimo_fast.train.checkpoint`), and data-parallel runs under torchrun
(:mod:`~mimo_fast.train.dist`). The precoders train on the same loop
(:class:`~mimo_fast.train.loop.Loop`; :mod:`mimo_fast.precode.train`). The command is
``mimo-fast train MODEL``; see ``docs/training.md``."""
from mimo_fast.train.checkpoint import CheckpointError
from mimo_fast.train.data import Batch, BatchGenerator, DataConfig
from mimo_fast.train.dist import DistInfo
from mimo_fast.train.loop import Loop, TrainConfig, Trainer

__all__ = ["Trainer", "Loop", "TrainConfig", "DataConfig", "BatchGenerator", "Batch", "DistInfo", "CheckpointError"]
