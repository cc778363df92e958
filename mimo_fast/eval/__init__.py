"""Evaluation: Monte-Carlo SER/BER (:mod:`mimo_fast.eval.montecarlo`), the matched-filter
bound with SNR-at-SER helpers (:mod:`mimo_fast.eval.bounds`), and coded BER/BLER over
Sionna's 5G LDPC code (:mod:`mimo_fast.eval.coded`; needs the ``[sionna]`` extra to run)."""
from mimo_fast.eval.bounds import mfb_ser, snr_at_mfb, snr_at_ser
from mimo_fast.eval.coded import CodedConfig, run_coded
from mimo_fast.eval.montecarlo import SimConfig, draw_batch, format_table, plot, point_generator, run_point, simulate

__all__ = ["SimConfig", "simulate", "run_point", "draw_batch", "point_generator", "format_table", "plot",
           "mfb_ser", "snr_at_mfb", "snr_at_ser", "CodedConfig", "run_coded"]
