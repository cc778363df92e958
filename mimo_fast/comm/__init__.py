"""Communications substrate: constellations, bits, channels, noise and SNR.

``mimo_fast.comm.channel`` is the submodule (:mod:`mimo_fast.comm.channel`); the channel
draw it used to name here is :func:`draw_channel`.
"""
from mimo_fast.comm.channel import (awgn, complex_normal, complex_to_real, draw_channel, exp_correlation,
                                    imperfect_csi, kronecker, noise_var_from_snr, rayleigh,
                                    real_equivalent, real_to_complex)
from mimo_fast.comm.constellation import QAM_ORDERS, Constellation, as_constellation, from_name, qam

__all__ = [
    "Constellation", "qam", "from_name", "as_constellation", "QAM_ORDERS",
    "noise_var_from_snr", "awgn", "complex_normal", "rayleigh", "kronecker", "draw_channel",
    "exp_correlation", "imperfect_csi", "real_equivalent", "complex_to_real", "real_to_complex",
]
