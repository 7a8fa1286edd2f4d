"""Running an external program (Rscript) so that nothing outlives the call.

The program runs in a session of its own, and the wait for it polls: an exception sent
to the waiting thread (the harness's job time limit, Ctrl-C) is seen within
``POLL_SECONDS``, where a blocking wait would see it only when the program ends. On a
timeout or any such exception the program's whole process group is killed: the
program may have started children of its own (GNU time wrapping R, say).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence

POLL_SECONDS = 0.1


def run_in_session(
    command: Sequence[str],
    *,
    timeout: float | None = None,
    env: Mapping[str, str] | None = None,
) -> subprocess.CompletedProcess:
    """Run ``command`` to its end, its output captured as text.

    Parameters
    ----------
    command : sequence of str
    timeout : float, optional
        Seconds; over it the process group is killed and ``TimeoutExpired`` raised.
    env : mapping, optional
        The program's environment (default this process's).

    Returns
    -------
    subprocess.CompletedProcess
        With ``returncode``, ``stdout`` and ``stderr``.

    Raises
    ------
    subprocess.TimeoutExpired
        After killing the process group, when ``timeout`` passed.
    OSError
        When the program cannot be started.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    process = subprocess.Popen(
        list(command),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=None if env is None else dict(env),
        start_new_session=True,
    )
    try:
        while True:
            try:
                stdout, stderr = process.communicate(timeout=POLL_SECONDS)
                break
            except subprocess.TimeoutExpired:
                if deadline is not None and time.monotonic() > deadline:
                    raise subprocess.TimeoutExpired(list(command), timeout) from None
    except BaseException:  # a timeout, the job's time limit, Ctrl-C: nothing outlives it
        kill_session(process)
        raise
    return subprocess.CompletedProcess(list(command), process.returncode, stdout, stderr)


def kill_session(process: subprocess.Popen) -> None:
    """Kill the process group that ``process`` leads, and reap it."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass  # already gone
    for stream in (process.stdout, process.stderr):
        if stream is not None:
            stream.close()
    process.wait()
