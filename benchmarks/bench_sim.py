"""Speed and peak memory of the online_services simulator at 1M and 10M rows.

Each size runs in a fresh process so its peak resident memory (VmHWM) is its own;
the baseline after importing the packages is subtracted. Targets (issue): 10M rows in
under 15 s and under 4 GB.

Run with ``make bench-sim`` or ``python benchmarks/bench_sim.py [--sizes 1000000 ...]``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import time

from _memory import MB, peak_rss_kb

TARGET_SECONDS, TARGET_GB = 15.0, 4.0


def _generate(rows: int, queue: multiprocessing.Queue) -> None:
    from simulators import simulate

    baseline = peak_rss_kb() / MB
    n_users = max(rows // 10, 1)
    started = time.perf_counter()
    data = simulate("online_services", seed=1, n_users=n_users, n_items=max(n_users // 100, 10))
    seconds = time.perf_counter() - started
    peak = peak_rss_kb() / MB
    queue.put(
        {
            "rows": data.n_rows,
            "users": n_users,
            "seconds": seconds,
            "peak_mb": peak - baseline,
            "frame_mb": data.frame.memory_usage(deep=True).sum() / 2**20,
        }
    )


def measure(rows: int) -> dict:
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_generate, args=(rows, queue))
    process.start()
    result = queue.get()
    process.join()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 10_000_000])
    args = parser.parse_args()
    print(
        f"{'rows':>11} {'users':>9} {'seconds':>8} {'rows/s':>11} {'peak MB':>8} "
        f"{'frame MB':>9} {'time/target':>12} {'memory/target':>14}"
    )
    results = []
    for size in args.sizes:
        r = measure(size)
        results.append(r)
        print(
            f"{r['rows']:>11,} {r['users']:>9,} {r['seconds']:>8.2f} "
            f"{r['rows'] / r['seconds']:>11,.0f} {r['peak_mb']:>8.0f} {r['frame_mb']:>9.0f} "
            f"{r['seconds'] / TARGET_SECONDS:>12.2f} {r['peak_mb'] / 1024 / TARGET_GB:>14.2f}"
        )
    print(json.dumps(results))


if __name__ == "__main__":
    main()
