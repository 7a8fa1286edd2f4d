"""The comparison of ``bench_lmm.py``: ratios ours/peer, each peer's optimum against ours,
and the tables and footnotes printed from the records."""

from __future__ import annotations

import argparse
from typing import Any

PEERS = ("lme4", "statsmodels", "mixedlm-rs", "gpboost")
TARGETS = {"lme4": 0.5, "statsmodels": 0.1}  # ours / peer at most: half lme4's time, ...
SAME_OPTIMUM = 1e-6  # relative log-likelihood difference above which fits differ


def compare_optimum(peer: dict[str, Any], ours: dict[str, Any]) -> dict[str, Any] | None:
    """The peer's log-likelihood minus ours at the same criterion, and whether it is the
    same optimum (relative difference at most ``SAME_OPTIMUM``)."""
    if peer.get("loglik") is None or ours.get("loglik") is None:
        return None
    difference = peer["loglik"] - ours["loglik"]
    relative = abs(difference) / abs(ours["loglik"])
    return {"difference": difference, "relative": relative, "same": relative <= SAME_OPTIMUM}


def compare_optima(peer: dict[str, Any], ours: dict[str, Any]) -> dict[str, Any] | None:
    """The largest difference over the small fits both made, and how many differ."""
    pairs = list(zip(peer.get("logliks", []), ours["logliks"], strict=False))
    if not pairs:
        return None
    differences = [theirs - mine for theirs, mine in pairs]
    relative = [abs(d) / abs(mine) for d, (_, mine) in zip(differences, pairs, strict=True)]
    worst = max(range(len(pairs)), key=lambda k: relative[k])
    return {
        "difference": differences[worst],
        "relative": relative[worst],
        "same": relative[worst] <= SAME_OPTIMUM,
        "fits_differing": sum(r > SAME_OPTIMUM for r in relative),
        "worst_dataset": worst,
        "fits_compared": len(pairs),
    }


def ratio(ours: dict[str, Any] | None, peer: dict[str, Any], per_fit: bool = False) -> dict | None:
    """Ours / peer in seconds (per fit for the throughput case): below 1, ours is faster.
    When the peer hit its time limit the ratio is an upper bound. None when either did not
    run (ours by ML only runs where GPBoost does)."""
    if ours is None or ours.get("status") != "ok":
        return None

    def seconds(result: dict[str, Any]) -> float:
        return result["seconds"] / result["fits"] if per_fit else result["seconds"]

    if peer.get("status") in ("ok", "partial"):
        return {"value": seconds(ours) / seconds(peer), "upper_bound": False}
    if peer.get("status") == "time_limit" and not per_fit:
        return {"value": ours["seconds"] / peer["limit_seconds"], "upper_bound": True}
    return None


def _seconds(result: dict[str, Any] | None, per_fit: bool = False) -> str:
    if result is None:
        return "-"
    status = result.get("status")
    if status in ("ok", "partial"):
        if per_fit:
            return f"{result['seconds'] / result['fits']:.3g}"
        return f"{result['seconds']:.3g}"
    if status == "time_limit":
        return f"> {result['limit_seconds']:.0f}"
    if status == "memory_limit":
        return "out of memory"
    return {"skipped": "skipped", "cannot": "cannot"}.get(status, "failed")


def _ratio(entry: dict[str, Any] | None) -> str:
    if entry is None:
        return "-"
    return f"{'< ' if entry['upper_bound'] else ''}{entry['value']:.3g}"


def _memory(result: dict[str, Any] | None) -> str:
    if not result or result.get("peak_mb") is None:
        return "-"
    if result.get("above_data_mb") is None:
        return f">= {result['peak_mb']:.0f} (at kill)"
    return f"{result['peak_mb']:.0f} / {result['above_data_mb']:.0f}"


def _optimum(entry: dict[str, Any] | None) -> str:
    if entry is None:
        return "-"
    flag = "" if entry["same"] else " DIFFERS"
    if entry.get("fits_differing"):
        flag += f" ({entry['fits_differing']}/{entry['fits_compared']})"
    return f"{entry['difference']:+.2e}{flag}"


def _text_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(row[k]) for row in [header, *rows]) for k in range(len(header))]
    lines = [
        "  ".join(cell.rjust(w) for cell, w in zip(row, widths, strict=True))
        for row in [header, *rows]
    ]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def _levels(record: dict[str, Any]) -> str:
    return " x ".join(f"{n:,}" for n in record.get("levels", {}).values()) or "-"


def format_tables(records: list[dict[str, Any]]) -> str:
    """Seconds and ratios, optima, and memory: one row per case.

    Parameters
    ----------
    records : list of dict
        One per case, as written to the JSON file.

    Returns
    -------
    str
    """
    run = [r for r in records if not r.get("skipped")]
    header = ["case", "rows", "levels", "ours s"]
    for peer in PEERS:
        if peer == "gpboost":
            header += ["ours ML s"]
        header += [f"{peer} s", f"ours/{peer}"]
    rows = []
    for r in run:
        per_fit = bool(r.get("throughput"))
        row = [r["name"], f"{r['rows']:,}", _levels(r), _seconds(r["ours"], per_fit)]
        for peer in PEERS:
            if peer == "gpboost":
                row += [_seconds(r.get("ours_ml"))]
            row += [_seconds(r["peers"][peer], per_fit), _ratio(r["ratios"].get(peer))]
        rows.append(row)
    times = _text_table(header, rows)

    header = ["case", "criterion", "ours logLik", *[f"{p} - ours" for p in PEERS]]
    rows = []
    for r in run:
        ours = r["ours"]
        loglik = f"{ours['loglik']:.6f}" if "loglik" in ours else "(per fit)"
        row = [r["name"], "REML", loglik]
        row += [_optimum(r["optimum"].get(peer)) for peer in PEERS]
        rows.append(row)
    optima = _text_table(header, rows)

    header = ["case", "ours", *PEERS]
    rows = [
        [r["name"], _memory(r.get("ours_memory")), *[_memory(r["peers"][p]) for p in PEERS]]
        for r in run
        if not r.get("throughput")
    ]
    memory = _text_table(header, rows)
    return "\n\n".join(
        [
            "Fit seconds (median of the timed fits; small_1000: seconds per fit) and ours/peer "
            "(below 1: ours faster)",
            times,
            "Log-likelihood of each peer's optimum minus ours at the same criterion (REML; "
            "gpboost: ML, against ours ML)",
            optima,
            "Peak memory, MB: whole process / above the loaded data",
            memory,
        ]
    )


def footnotes(records: list[dict[str, Any]], args: argparse.Namespace) -> str:
    """What the tables' numbers are, and the peers' versions, warnings and failures."""
    threads = f"{args.threads} thread(s)" if args.threads > 0 else "its default threads"
    notes = [
        "seconds: median of the timed fits after one warm-up (single-fit cases: one cold "
        "fit), each fit building its design from the data frame; lme4 timed by "
        "system.time around lmer only; Python peers stopped after "
        f"{args.limit:g} s per fit ('> N': stopped; its ratio is then an upper bound, '< x'); "
        f"every implementation on {threads} (BLAS, OpenMP, Rust).",
        f"targets: ours/lme4 <= {TARGETS['lme4']:g}, ours/statsmodels <= "
        f"{TARGETS['statsmodels']:g}.",
        "logLik: the exact criterion at each optimum (ours: at our theta, whichever solver "
        "found it); 'DIFFERS': relative difference above "
        f"{SAME_OPTIMUM:g}, the peer's fit is not the same fit as ours (positive: the peer's "
        "optimum is higher). small_1000: the largest difference over the fits both made, "
        "'(k/n)': k of the n fits differ.",
        "gpboost: maximises the ML likelihood (exact, matrix_inversion_method='cholesky'; "
        "its default iterative method's optimum differs by 1e-6 to 1e-4) and fits random "
        "intercepts and slopes as uncorrelated; it is compared with ours fitting that model "
        "by ML ('ours ML s': (1 + x || g) where the case has slopes).",
        "mixedlm-rs: statsmodels' API in Rust; one grouping factor only.",
        "statsmodels: crossed factors are variance components of one group holding all rows "
        "(use_sparse=True).",
        "peak MB: ours = cold fit in a fresh Python process (VmHWM); lme4 = the R process "
        "(GNU time -v, else VmHWM); Python peers = their process's VmHWM.",
    ]
    for r in records:
        if r.get("skipped"):
            notes.append(f"{r['name']}: skipped: {r['skipped']}")
            continue
        if r.get("throughput"):
            rates = [f"ours {r['ours']['fits'] / r['ours']['seconds']:.1f}"]
            for peer, result in r["peers"].items():
                if result.get("status") in ("ok", "partial"):
                    rate = f"{peer} {result['fits'] / result['seconds']:.1f}"
                    if result["status"] == "partial":
                        rate += f" ({result['fits']} fits in {args.loop_limit:g} s)"
                    rates.append(rate)
            notes.append(f"{r['name']}: {r['formula']}, fits per second: " + ", ".join(rates))
            for peer, entry in r["optimum"].items():
                if entry and entry["fits_differing"]:
                    notes.append(
                        f"{r['name']}, {peer}: {entry['fits_differing']} of "
                        f"{entry['fits_compared']} optima differ from ours; the largest on "
                        f"data set {entry['worst_dataset']} (its seed)"
                    )
        elif r["ours"].get("solver"):
            notes.append(
                f"{r['name']}: {r['formula']}; ours: solver {r['ours']['solver']} "
                f"({r['ours']['solver_reason']})"
            )
    skipped = {
        peer: result["reason"]
        for r in records
        for peer, result in r.get("peers", {}).items()
        if result.get("status") == "skipped"
    }
    notes += [f"{peer}: skipped: {reason}" for peer, reason in skipped.items()]
    for r in records:
        if r.get("skipped"):
            continue
        for who, result in [("ours", r["ours"]), *r["peers"].items()]:
            if result.get("reason") and result.get("status") != "skipped":
                reason = " ".join(str(result["reason"]).split())
                notes.append(f"{r['name']}, {who}: {result['status']}: {reason}")
            for text in result.get("warnings", []):
                # R's messages may hold line breaks ("...eigenvalue\n - Rescale variables?").
                notes.append(f"{r['name']}, {who}: {' '.join(text.split())}")
    return "\n".join(f"* {note}" for note in notes)
