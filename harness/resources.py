"""Peak resident memory of this process, as the operating system counts it.

Shared by the harness (the ``peak_memory_mb`` of a result row) and the benchmark scripts.
Resident memory counts every allocation that touched pages, native ones included
(BLAS workspaces, OpenMP buffers, C++ containers), at no cost to the code measured:
the kernel keeps the peak (``VmHWM`` in ``/proc/self/status``) anyway. ``tracemalloc``
sees only allocations reported to Python (its objects, numpy's buffers) and slows the
traced code unevenly.

The increase above the resident size before a call is a lower bound of what the call
allocated: memory that earlier work freed but the allocator kept (glibc's heap, Python's
arenas) is reused without growing the process, typically a few MB in a long-lived worker.

On Linux >= 4.0 the peak can be reset to the current size by writing ``5`` to
``/proc/self/clear_refs``, so the peak of one call is measured exactly
(:func:`watch_peak_memory`). Where it cannot, the measure falls back to the rise of the
process's lifetime peak (``VmHWM``, else ``getrusage``'s ``ru_maxrss``), which misses what
a call uses below an earlier peak; each :class:`PeakMemory` names the measure it used.

Examples
--------
>>> watch = watch_peak_memory()
>>> block = bytearray(50 * 2**20)  # zero-filled, so resident
>>> memory = watch.read()
>>> memory.measure in MEASURES
True
"""

from __future__ import annotations

import math
import re
import sys
from dataclasses import dataclass
from pathlib import Path

try:
    import resource
except ImportError:  # Windows has no getrusage
    resource = None  # type: ignore[assignment]

MB = 1024.0  # VmHWM, VmRSS and Linux's ru_maxrss are in kilobytes

MEASURES = {
    "vmhwm_reset": "VmHWM after resetting it (/proc/self/clear_refs) just before the call, "
    "minus VmRSS then",
    "vmhwm_rise": "VmHWM (it could not be reset) minus VmHWM before the call: what the call "
    "used below the process's earlier peak is not counted",
    "ru_maxrss_rise": "ru_maxrss (no /proc) minus ru_maxrss before the call: what the call "
    "used below the process's earlier peak is not counted",
    "unavailable": "the platform reports no resident memory",
}


def status_kb(field: str, pid: int | str = "self") -> float | None:
    """A ``kB`` field of ``/proc/<pid>/status`` (``VmHWM``, ``VmRSS``), None if unreadable.

    Parameters
    ----------
    field : str
    pid : int or "self"

    Returns
    -------
    float or None
    """
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    found = re.search(rf"^{field}:\s+(\d+)", text, flags=re.MULTILINE)
    return float(found.group(1)) if found else None


def vm_hwm_kb(pid: int | str = "self") -> float | None:
    """Peak resident set size (VmHWM) of a process in kilobytes, None if unreadable.

    ``ru_maxrss`` is no substitute in a spawned child: it still holds the parent's size at
    the fork that preceded the exec.
    """
    return status_kb("VmHWM", pid)


def vm_rss_kb(pid: int | str = "self") -> float | None:
    """Current resident set size (VmRSS) of a process in kilobytes, None if unreadable."""
    return status_kb("VmRSS", pid)


def reset_peak_rss() -> bool:
    """Reset this process's VmHWM to its current RSS (Linux >= 4.0); False if refused."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def _ru_maxrss_kb() -> float | None:
    if resource is None:
        return None
    peak = float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    return peak / 1024.0 if sys.platform == "darwin" else peak  # bytes on macOS


def peak_rss_kb() -> float:
    """This process's peak resident set size in kilobytes (``ru_maxrss`` without /proc).

    NaN where the platform reports neither.
    """
    peak = vm_hwm_kb()
    if peak is None:
        peak = _ru_maxrss_kb()
    return math.nan if peak is None else peak


@dataclass(frozen=True)
class PeakMemory:
    """What a call held at most, read by :meth:`PeakWatch.read`.

    Attributes
    ----------
    increase_mb : float
        The peak above what the process held before the call (see ``measure``).
    peak_mb : float
        The process's absolute peak resident size.
    measure : str
        How it was taken, a key of :data:`MEASURES`.
    """

    increase_mb: float
    peak_mb: float
    measure: str


@dataclass(frozen=True)
class PeakWatch:
    """A window opened by :func:`watch_peak_memory`: its baseline and how it measures."""

    baseline_kb: float
    measure: str

    def read(self) -> PeakMemory:
        """The peak since the window opened.

        Returns
        -------
        PeakMemory
        """
        if self.measure == "unavailable":
            return PeakMemory(math.nan, math.nan, self.measure)
        peak = _ru_maxrss_kb() if self.measure == "ru_maxrss_rise" else vm_hwm_kb()
        if peak is None:  # /proc vanished in between: say so rather than guess
            return PeakMemory(math.nan, math.nan, "unavailable")
        return PeakMemory(max(peak - self.baseline_kb, 0.0) / MB, peak / MB, self.measure)


def watch_peak_memory() -> PeakWatch:
    """Open a window on this process's peak resident memory, just before a call.

    The window measures the whole process: calls running in other threads of it at the
    same time are counted too.

    Returns
    -------
    PeakWatch
        Its :meth:`~PeakWatch.read` gives the peak since, as is and above the resident
        size now (``vmhwm_reset``), or, where the peak cannot be reset, above the
        process's earlier peak (``vmhwm_rise``, ``ru_maxrss_rise``).
    """
    rss = vm_rss_kb()
    if rss is not None and reset_peak_rss():
        return PeakWatch(rss, "vmhwm_reset")
    hwm = vm_hwm_kb()
    if hwm is not None:
        return PeakWatch(hwm, "vmhwm_rise")
    maxrss = _ru_maxrss_kb()
    if maxrss is not None:
        return PeakWatch(maxrss, "ru_maxrss_rise")
    return PeakWatch(math.nan, "unavailable")
