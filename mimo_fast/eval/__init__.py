"""Evaluation: Monte-Carlo SER/BER (:mod:`mimo_fast.eval.montecarlo`)."""
from mimo_fast.eval.montecarlo import SimConfig, draw_batch, format_table, plot, point_generator, run_point, simulate

__all__ = ["SimConfig", "simulate", "run_point", "draw_batch", "point_generator", "format_table", "plot"]
