"""The Python peers of ``bench_lmm.py``, one adapter each: statsmodels, mixedlm-rs, GPBoost.

An adapter says whether its library can express a case's model (and why not), prepares
the data outside the timed call (columns the library needs that the others do not), and
fits the case's model from the data frame, design construction included, returning the
log-likelihood at its optimum. Each fit runs in a spawned process that is stopped when a
fit exceeds the time limit; that process also gives the peak memory.
"""

from __future__ import annotations

import ctypes
import multiprocessing as mp
import os
import re
import resource
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from _lmm_cases import Case
from _memory import MB, peak_rss_kb, vm_hwm_kb

REPEAT_BELOW = 5.0  # seconds; slower peer fits are timed once, without a warm-up
MEMORY_SHARE = 0.8  # of physical memory, the address-space limit of a capped peer
STARTUP_TIMEOUT = 600.0  # seconds for a child to import and load the data
ALL_ROWS = "_all_rows"  # one group holding every row, for crossed variance components


def summarise_warnings(texts: list[str]) -> list[str]:
    """Warnings of many fits, one line per kind: numbers become ``#``, with a count."""
    counts: dict[str, int] = {}
    for text in texts:
        kind = re.sub(r"[-+]?\d[\d.eE+-]*", "#", text)
        counts[kind] = counts.get(kind, 0) + 1
    return [f"{kind} ({count} fits)" for kind, count in sorted(counts.items())]


def _joined(factor: str) -> str:
    """The column name of an interaction factor such as ``dept:service``."""
    return factor.replace(":", "_")


def _add_joined_factors(frame: pd.DataFrame, case: Case) -> pd.DataFrame:
    """Add a column per interaction factor, its columns' labels joined by ``:``."""
    for term in case.random:
        if ":" in term.factor:
            columns = term.factor.split(":")
            frame[_joined(term.factor)] = frame[columns].astype(str).agg(":".join, axis=1)
    return frame


# ---------------------------------------------------------------------------
# statsmodels
# ---------------------------------------------------------------------------


def _statsmodels_cannot(case: Case) -> str | None:
    if len(case.random) == 1:
        return None
    if any(term.slopes for term in case.random):
        return "crossed factors are variance components of one group: intercepts only"
    return None


def _statsmodels_prepare(frame: pd.DataFrame, case: Case) -> pd.DataFrame:
    if len(case.random) > 1:
        frame[ALL_ROWS] = 0
    return _add_joined_factors(frame, case)


def _statsmodels_fit(frame: pd.DataFrame, case: Case) -> dict[str, Any]:
    import statsmodels.formula.api as smf

    if len(case.random) == 1:
        term = case.random[0]
        groups, vc_formula = _joined(term.factor), None
        re_formula = f"~{' + '.join(term.slopes)}" if term.slopes else None
    else:
        # Crossed factors: variance components of one group holding all rows, sparse
        # (statsmodels' faster setting for them).
        groups, re_formula = ALL_ROWS, None
        vc_formula = {_joined(t.factor): f"0 + C({_joined(t.factor)})" for t in case.random}
    model = smf.mixedlm(
        case.fixed_formula,
        frame,
        groups=groups,
        re_formula=re_formula,
        vc_formula=vc_formula,
        use_sparse=vc_formula is not None,
    )
    # Count the optimiser's calls; results keep no call counts of their own.
    counts = {"loglike": 0, "score": 0}
    for name in counts:
        method = getattr(model, name)

        def counted(*args: Any, _name: str = name, _method: Any = method, **kw: Any) -> Any:
            counts[_name] += 1
            return _method(*args, **kw)

        setattr(model, name, counted)
    result = model.fit(reml=True)
    return {
        "loglik": float(result.llf),
        "evaluations": f"{counts['loglike']} loglike + {counts['score']} score",
        "converged": bool(result.converged),
    }


# ---------------------------------------------------------------------------
# mixedlm-rs
# ---------------------------------------------------------------------------


def _mixedlm_rs_cannot(case: Case) -> str | None:
    if len(case.random) > 1:
        return "one grouping factor only (no crossed factors, no variance components)"
    return None


def _mixedlm_rs_fit(frame: pd.DataFrame, case: Case) -> dict[str, Any]:
    import mixedlm_rs

    term = case.random[0]
    re_formula = f"~{' + '.join(term.slopes)}" if term.slopes else None
    model = mixedlm_rs.mixedlm(
        case.fixed_formula, frame, groups=frame[term.factor], re_formula=re_formula
    )
    result = model.fit(reml=True)
    return {"loglik": float(result.llf), "converged": bool(result.converged)}


# ---------------------------------------------------------------------------
# GPBoost
# ---------------------------------------------------------------------------


def _gpboost_cannot(case: Case) -> str | None:
    return None


def _gpboost_fit(frame: pd.DataFrame, case: Case) -> dict[str, Any]:
    import gpboost
    import patsy

    response, fixed = patsy.dmatrices(case.fixed_formula, frame, return_type="matrix")
    factors = [_joined(term.factor) for term in case.random]
    slopes = [(k + 1, column) for k, term in enumerate(case.random) for column in term.slopes]
    model = gpboost.GPModel(
        group_data=frame[factors].to_numpy(),
        group_rand_coef_data=frame[[c for _, c in slopes]].to_numpy() if slopes else None,
        ind_effect_group_rand_coef=[k for k, _ in slopes] if slopes else None,
        likelihood="gaussian",
        # The exact likelihood: GPBoost's default for random coefficients and crossed
        # factors is iterative, with a stochastic log-determinant whose optimum differs
        # from the exact one by 1e-6 to 1e-4 relative (sleepstudy: 0.08 log-likelihood).
        matrix_inversion_method="cholesky",
    )
    model.fit(y=np.asarray(response).ravel(), X=np.asarray(fixed))
    return {"loglik": -float(model.get_current_neg_log_likelihood())}


# ---------------------------------------------------------------------------
# Registry
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class PythonPeer:
    """A peer library fitted in a child process.

    Parameters
    ----------
    name : str
        Name in the table and in ``--skip``.
    module : str
        Module to import (its ``__version__`` is recorded).
    install : str
        How to install it, for the message when it is absent.
    criterion : str
        "REML" or "ML": the criterion it maximises, which ours is compared at.
    uncorrelated : bool
        Whether it fits random intercepts and slopes as uncorrelated (compared with our
        fit of the ``||`` model).
    cannot : callable
        Why it cannot fit a case, or None.
    prepare : callable
        Adds the columns it needs before timing.
    fit : callable
        Fits the case from the frame; returns ``loglik`` and optional ``evaluations``,
        ``converged``.
    memory_cap : bool
        Whether its process gets an address-space limit (a dense design of crossed factors
        fails as "out of memory" instead of taking the machine down).
    """

    name: str
    module: str
    install: str
    criterion: str
    uncorrelated: bool
    cannot: Callable[[Case], str | None]
    prepare: Callable[[pd.DataFrame, Case], pd.DataFrame]
    fit: Callable[[pd.DataFrame, Case], dict[str, Any]]
    memory_cap: bool = False

    def unavailable(self) -> str | None:
        """Why the library cannot be run here, or None."""
        try:
            __import__(self.module)
        except ImportError as error:
            return f"{self.module} is not installed ({error}); {self.install}"
        return None


PYTHON_PEERS: dict[str, PythonPeer] = {
    peer.name: peer
    for peer in (
        PythonPeer(
            name="statsmodels",
            module="statsmodels",
            install="pip install 'mixbench[statsmodels]'",
            criterion="REML",
            uncorrelated=False,
            cannot=_statsmodels_cannot,
            prepare=_statsmodels_prepare,
            fit=_statsmodels_fit,
            memory_cap=True,
        ),
        PythonPeer(
            name="mixedlm-rs",
            module="mixedlm_rs",
            install="pip install 'mixbench[peers]'",
            criterion="REML",
            uncorrelated=False,
            cannot=_mixedlm_rs_cannot,
            prepare=lambda frame, case: frame,
            fit=_mixedlm_rs_fit,
        ),
        PythonPeer(
            name="gpboost",
            module="gpboost",
            install="pip install 'mixbench[peers]'",
            criterion="ML",
            uncorrelated=True,
            cannot=_gpboost_cannot,
            prepare=_add_joined_factors,
            fit=_gpboost_fit,
        ),
    )
}


# ---------------------------------------------------------------------------
# Child processes
# ---------------------------------------------------------------------------


def _capture_native_output() -> Path:
    """Send this process's stdout (C and Rust libraries print there) to a file, so that
    the parent's progress line stays clean; its warning lines are reported."""
    handle, name = tempfile.mkstemp(prefix="bench_lmm_peer_", suffix=".txt")
    os.dup2(handle, 1)
    os.close(handle)
    return Path(name)


def _native_warnings(path: Path) -> list[str]:
    ctypes.CDLL(None).fflush(None)  # C stdio buffers what it prints to a file
    lines = path.read_text(errors="replace").splitlines()
    path.unlink(missing_ok=True)
    return [line.strip() for line in lines if "warning" in line.lower()]


def _timed(peer: PythonPeer, frame: pd.DataFrame, case: Case) -> dict[str, Any]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        start = time.perf_counter()
        out = peer.fit(frame, case)
        seconds = time.perf_counter() - start
    return dict(out, seconds=seconds, warnings=sorted({str(w.message) for w in caught}))


def _limit_memory(peer: PythonPeer) -> float | None:
    if not peer.memory_cap:
        return None
    limit = int(MEMORY_SHARE * os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    return limit


def _case_child(name: str, path: str, case: Case, repeats: int, conn: Connection) -> None:
    peer = PYTHON_PEERS[name]
    captured = _capture_native_output()
    limit = _limit_memory(peer)
    frame = peer.prepare(pd.read_pickle(path), case)
    module = __import__(peer.module)
    baseline = peak_rss_kb()
    try:
        conn.send(("start", None))
        first = _timed(peer, frame, case)
        runs = [first]
        if first["seconds"] < REPEAT_BELOW:
            # The first fit was the warm-up; time as many as ours.
            runs = []
            for _ in range(repeats):
                conn.send(("start", None))
                runs.append(_timed(peer, frame, case))
    except MemoryError:
        conn.send(("error", {"status": "memory_limit", "limit_mb": (limit or 0) / MB**2}))
        return
    except Exception as error:  # reported in the table, not hidden
        conn.send(("error", {"status": "error", "reason": f"{type(error).__name__}: {error}"}))
        return
    peak = peak_rss_kb()
    seconds = [run["seconds"] for run in runs]
    notes = {text for run in runs for text in run["warnings"]} | set(_native_warnings(captured))
    conn.send(
        (
            "done",
            dict(
                runs[-1],
                status="ok",
                seconds=statistics.median(seconds),
                all_seconds=seconds,
                peak_mb=peak / MB,
                above_data_mb=(peak - baseline) / MB,
                warnings=sorted(notes),
                version=getattr(module, "__version__", "?"),
            ),
        )
    )


def _throughput_child(name: str, path: str, case: Case, limit: float, conn: Connection) -> None:
    peer = PYTHON_PEERS[name]
    captured = _capture_native_output()
    frame = pd.read_pickle(path)
    datasets = [
        peer.prepare(part.reset_index(drop=True), case) for _, part in frame.groupby("dataset")
    ]
    module = __import__(peer.module)
    try:
        conn.send(("start", None))
        _timed(peer, datasets[0], case)  # warm-up: imports and first-call costs
        logliks: list[float] = []
        notes: list[str] = []
        start = time.perf_counter()
        for data in datasets:
            run = _timed(peer, data, case)
            logliks.append(run["loglik"])
            notes.extend(run["warnings"])
            if time.perf_counter() - start > limit:
                break
        seconds = time.perf_counter() - start
    except Exception as error:  # reported in the table, not hidden
        conn.send(("error", {"status": "error", "reason": f"{type(error).__name__}: {error}"}))
        return
    conn.send(
        (
            "done",
            {
                "status": "ok" if len(logliks) == len(datasets) else "partial",
                "seconds": seconds,
                "fits": len(logliks),
                "logliks": logliks,
                "warnings": summarise_warnings(notes + _native_warnings(captured)),
                "version": getattr(module, "__version__", "?"),
            },
        )
    )


def _run_child(target: Callable[..., None], args: tuple[Any, ...], limit: float) -> dict[str, Any]:
    """Run ``target(*args, conn)`` in a spawned process; stop it when it sends nothing for
    ``limit`` seconds after a ``start`` message (or for the startup time before one)."""
    context = mp.get_context("spawn")
    receiver, sender = context.Pipe(duplex=False)
    process = context.Process(target=target, args=(*args, sender))
    process.start()
    sender.close()
    timeout = STARTUP_TIMEOUT
    try:
        while True:
            if not receiver.poll(timeout):
                if timeout == STARTUP_TIMEOUT:
                    return {"status": "error", "reason": "no fit started within the startup time"}
                peak = vm_hwm_kb(process.pid)
                return {
                    "status": "time_limit",
                    "limit_seconds": limit,
                    "peak_mb": None if peak is None else peak / MB,
                }
            try:
                kind, payload = receiver.recv()
            except EOFError:
                return {"status": "error", "reason": f"process died (exit code {process.exitcode})"}
            if kind == "start":
                timeout = limit
            else:
                return payload
    finally:
        if process.is_alive():
            process.kill()
        process.join()


def run_peer_case(name: str, case: Case, path: Path, limit: float) -> dict[str, Any]:
    """Fit a case with a Python peer in a child process stopped after ``limit`` s per fit.

    Parameters
    ----------
    name : str
        Key of ``PYTHON_PEERS``.
    case : Case
    path : Path
        Pickle of the case's data.
    limit : float
        Seconds allowed per fit.

    Returns
    -------
    dict
        ``status`` ("ok", "time_limit", "memory_limit" or "error") and, when ok,
        ``seconds`` (median), ``all_seconds``, ``loglik`` (at the peer's criterion),
        memory, warnings and the library's version.
    """
    return _run_child(_case_child, (name, str(path), case, case.repeats), limit)


def run_peer_throughput(name: str, case: Case, path: Path, limit: float) -> dict[str, Any]:
    """Fit the small data sets of ``path`` one after another with a Python peer.

    Parameters
    ----------
    name : str
        Key of ``PYTHON_PEERS``.
    case : Case
        The model of every small data set.
    path : Path
        Pickle of all data sets, told apart by a ``dataset`` column.
    limit : float
        Seconds after which no further fit is started (the rate is then of the fits done).

    Returns
    -------
    dict
        ``status`` ("ok", "partial" when the limit stopped it, or "error"), ``seconds``
        (wall time of the fits after a warm-up fit), ``fits`` and ``logliks``.
    """
    # The child checks the limit between fits; a single fit hanging is caught here.
    return _run_child(_throughput_child, (name, str(path), case, limit), limit + STARTUP_TIMEOUT)
