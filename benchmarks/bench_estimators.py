"""Fit time and peak memory of every registered estimator at 100k and 1M rows.

Data: ``online_services`` (Gaussian outcome for the regressors, binary for the binomial
models), users x items x regions; each estimator gets its roles from the data set as the
harness fills them, fits on 80% of the rows and predicts the rest. Each (estimator, size)
runs in a fresh process so its peak resident memory (VmHWM, minus the peak after the data
were made) is its own, with a time limit. Ratios are against ``mixed_lm`` on the same data.

Run with ``make bench-estimators`` or ``python benchmarks/bench_estimators.py``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import time
from pathlib import Path

import numpy as np
from _memory import MB, peak_rss_kb

import estimators

SIZES = {"100k": {"n_users": 10_000, "n_items": 500}, "1M": {"n_users": 100_000, "n_items": 1000}}
RESULTS = Path(__file__).parent / "results" / "bench_estimators.json"


def _run(name: str, size: str, connection) -> None:
    from harness.config import EstimatorSpec
    from harness.runner import fill_roles, predicted_mean
    from simulators import simulate

    family = estimators.info(name).families[0]
    data = simulate("online_services", seed=2016, family=family, **SIZES[size])
    test = np.arange(data.n_rows) % 5 == 0
    X, y = data.X, data.y.to_numpy()
    params = fill_roles(EstimatorSpec(name=name, params={}, label=name), data)
    model = estimators.get(name, **params)
    if "random_state" in model.get_params():
        model.set_params(random_state=0)
    baseline = peak_rss_kb()
    started = time.perf_counter()
    model.fit(X[~test], y[~test])
    fitted = time.perf_counter()
    prediction = predicted_mean(model, X[test])
    predicted = time.perf_counter()
    connection.send(
        {
            "rows": data.n_rows,
            "fit_seconds": fitted - started,
            "predict_seconds": predicted - fitted,
            "peak_mb": (peak_rss_kb() - baseline) / MB,
            "rmse": float(np.sqrt(np.mean((prediction - y[test]) ** 2))),
        }
    )


def measure(name: str, size: str, limit: float) -> dict:
    """One fit in a child process; a time-out or crash is reported, not raised."""
    context = multiprocessing.get_context("spawn")
    receiver, sender = context.Pipe(duplex=False)
    process = context.Process(target=_run, args=(name, size, sender))
    process.start()
    if receiver.poll(limit):
        result = receiver.recv()
    else:
        process.terminate()
        result = {
            "error": f"> {limit:.0f} s"
            if process.is_alive() or process.exitcode is None
            else f"exit code {process.exitcode}"
        }
    process.join()
    if "error" not in result and process.exitcode not in (0, None):
        result = {"error": f"exit code {process.exitcode}"}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", choices=list(SIZES), default=list(SIZES))
    parser.add_argument("--estimators", nargs="+", default=estimators.available())
    parser.add_argument("--limit", type=float, default=300.0, help="seconds per fit")
    args = parser.parse_args()
    results: dict[str, dict[str, dict]] = {}
    for size in args.sizes:
        print(f"\n{size} rows of online_services")
        print(
            f"{'estimator':<24} {'family':<9} {'fit s':>8} {'predict s':>10} {'peak MB':>8} "
            f"{'rmse':>7} {'fit / mixed_lm':>15}"
        )
        results[size] = {name: measure(name, size, args.limit) for name in args.estimators}
        reference = results[size].get("mixed_lm", {}).get("fit_seconds")
        for name, r in results[size].items():
            family = estimators.info(name).families[0]
            if "error" in r:
                print(f"{name:<24} {family:<9} {r['error']:>8}")
                continue
            ratio = f"{r['fit_seconds'] / reference:.2f}" if reference else "-"
            print(
                f"{name:<24} {family:<9} {r['fit_seconds']:>8.2f} {r['predict_seconds']:>10.2f} "
                f"{r['peak_mb']:>8.0f} {r['rmse']:>7.3f} {ratio:>15}"
            )
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2))
    print(f"\nWritten {RESULTS}")


if __name__ == "__main__":
    main()
