"""What the fast backends share: when a batch is small, and the float64 numbers of requantization.

Both fast backends (numpy.py, onnx.py) compute the spec's requantization (intref.requantize:
acc * multiplier / 2**shift, rounded half away from zero) in float64 instead of int64. It is
the same integer because every number involved is a multiple of 2**-shift whose numerator
stays below 2**52 (docs/quantization.md):

- scale_of(multiplier, shift) = multiplier * 2**-shift is exact (a 22-bit integer times a power of two);
- acc * scale + bias * scale is the exact real (acc + bias) * multiplier / 2**shift, because
  |acc + bias| < 2**30 and multiplier < 2**22;
- adding a constant c with |c| <= 256 whose fractional part is 0 or 0.5 (a relu's 0.5 and
  output zero point, onnx's +128) keeps the sum exact while c * 2**FOLD_SHIFT < 2**53.
"""

from __future__ import annotations

import numpy as np

SMALL_BATCH = 64  # batches up to this size: numpy's lower latency, and no chunking buffers
FOLD_SHIFT = 44  # a relu may fold 0.5 and constants up to 256 into its float64 offset for shifts <= 44


def scale_of(multiplier, shift) -> np.ndarray:
    """multiplier * 2**-shift in float64: exact, the real factor a requantization multiplies by."""
    return np.asarray(multiplier).astype(np.float64) * np.exp2(-np.asarray(shift).astype(np.float64))
