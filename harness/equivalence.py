"""Reading a difference against a practical margin, and adjusting a family of them.

A paired difference between two models is an interval of the improvement of ``a`` over
``b`` in % of ``b``'s mean (positive: ``a`` better). Against a margin ``m`` (in %):

- ``equivalent``: the interval lies inside (-m, m): whatever the sign, the difference is
  too small to matter, even when the interval excludes zero;
- ``better`` / ``worse``: the interval lies beyond the margin (above m, below -m);
- ``small better`` / ``small worse``: it excludes zero but overlaps the margin: a real
  difference that may not matter;
- ``inconclusive``: it covers zero and reaches beyond the margin: the data cannot tell.

Only ``better`` (or ``worse``) licenses the word "beats".

Findings shown together are a family: their p-values are adjusted by Holm's step-down
procedure, and each interval is widened to its step's level (the comparison with the
i-th smallest of k p-values gets confidence 1 - alpha / (k - i + 1)), so a comparison
Holm rejects has an interval that excludes zero, and vice versa.
"""

from __future__ import annotations

import numpy as np

VERDICTS: tuple[str, ...] = (
    "better",
    "small better",
    "equivalent",
    "inconclusive",
    "small worse",
    "worse",
)


def verdict(low: float, high: float, margin: float) -> str:
    """How to read an interval ``[low, high]`` of an improvement in % against a
    practical ``margin`` in % (see the module docstring); ``inconclusive`` without an
    interval."""
    if not (np.isfinite(low) and np.isfinite(high)):
        return "inconclusive"
    if -margin <= low and high <= margin:
        return "equivalent"
    if low > margin:
        return "better"
    if high < -margin:
        return "worse"
    if low > 0:
        return "small better"
    if high < 0:
        return "small worse"
    return "inconclusive"


def holm(p_values: list[float] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Holm's step-down adjustment of a family of p-values.

    Returns
    -------
    adjusted : numpy.ndarray
        The adjusted p-values, in the input order: max over j <= i of
        min(1, (k - j + 1) p_(j)) for the i-th smallest.
    divisor : numpy.ndarray
        Each comparison's Holm divisor k - i + 1 (its step), in the input order: its
        interval at level 1 - alpha / divisor is the one compatible with the procedure.
        NaN p-values are left out of the family (adjusted NaN, divisor 1).
    """
    p = np.asarray(p_values, dtype=float)
    adjusted = np.full(p.shape, np.nan)
    divisor = np.ones(p.shape)
    finite = np.flatnonzero(np.isfinite(p))
    order = finite[np.argsort(p[finite], kind="stable")]
    k = order.size
    running = 0.0
    for i, index in enumerate(order):
        divisor[index] = k - i
        running = max(running, min(1.0, (k - i) * p[index]))
        adjusted[index] = running
    return adjusted, divisor
