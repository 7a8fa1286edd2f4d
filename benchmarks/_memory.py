"""Peak resident memory of the current process, shared by the benchmark scripts."""

from __future__ import annotations

import re
import resource
from pathlib import Path

MB = 1024.0  # VmHWM and ru_maxrss are in kilobytes


def vm_hwm_kb(pid: int | str = "self") -> float | None:
    """Peak resident set size (VmHWM) of a process in kilobytes, None if unreadable.

    ``ru_maxrss`` is no substitute in a spawned child: it still holds the parent's size at
    the fork that preceded the exec.
    """
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    found = re.search(r"^VmHWM:\s+(\d+)", text, flags=re.MULTILINE)
    return float(found.group(1)) if found else None


def peak_rss_kb() -> float:
    """This process's peak resident set size in kilobytes (``ru_maxrss`` without /proc)."""
    peak = vm_hwm_kb()
    return float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) if peak is None else peak
