"""Evaluation: Monte-Carlo SER/BER (:mod:`mimo_fast.eval.montecarlo`) and the matched-filter
bound with SNR-at-SER helpers (:mod:`mimo_fast.eval.bounds`)."""
from mimo_fast.eval.bounds import mfb_ser, snr_at_mfb, snr_at_ser
from mimo_fast.eval.montecarlo import SimConfig, draw_batch, format_table, plot, point_generator, run_point, simulate

__all__ = ["SimConfig", "simulate", "run_point", "draw_batch", "point_generator", "format_table", "plot",
           "mfb_ser", "snr_at_mfb", "snr_at_ser"]
