"""Peak resident memory of the current process, shared by the benchmark scripts.

The helpers live in :mod:`harness.resources`, which the harness's result rows use too, so
that the benchmarks and the sweeps measure memory the same way.
"""

from __future__ import annotations

from harness.resources import MB, peak_rss_kb, reset_peak_rss, vm_hwm_kb, vm_rss_kb

__all__ = ["MB", "peak_rss_kb", "reset_peak_rss", "vm_hwm_kb", "vm_rss_kb"]
