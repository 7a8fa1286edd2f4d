"""The ``mixbench`` command: run sweeps, render reports, list components."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import estimators
import simulators
from harness import metrics, splits
from harness.calibrate import DEFAULT_REPLICATIONS, calibrate
from harness.config import BACKENDS, Config, ConfigError, load_config
from harness.jobs import all_jobs, expand
from harness.report import render_report, write_run_info
from harness.runner import DATA_CHECK_SECONDS, SweepInterrupted, check_data, run_sweep
from harness.store import StoreError, check_writable


def _run(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    if args.scheduler and (args.backend or config.backend) != "dask":
        raise ConfigError("--scheduler: a Dask scheduler address needs --backend dask")
    directory = Path(args.out) if args.out else Path("reports") / config.name
    try:
        check_writable(directory)
    except StoreError as error:
        raise ConfigError(f"{'--out: ' if args.out else ''}{error}") from None
    _warn_if_large(config, len(all_jobs(expand(config))))
    check_data(config)
    result = run_sweep(
        config,
        directory,
        n_jobs=args.n_jobs,
        force=args.force,
        progress=not args.quiet,
        backend=args.backend,
        scheduler=args.scheduler,
    )
    write_run_info(result.directory, ["mixbench", *sys.argv[1:]])
    report = render_report(result.directory)
    print(
        f"{result.n_jobs_total} jobs: {result.n_run} run, {result.n_reused} reused, "
        f"{result.n_failed} failed, {result.n_skipped} skipped in {result.seconds:.1f} s"
    )
    print(f"Report: {report.resolve()}")
    return 1 if result.n_failed and not args.allow_failures else 0


def _calibrate(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    directory = Path(args.out) if args.out else Path("reports") / f"{config.name}-calibration"
    result = calibrate(
        config,
        directory,
        replications=args.replications,
        n_jobs=args.n_jobs,
        progress=not args.quiet,
        command=f"mixbench calibrate {args.config} --replications {args.replications}",
    )
    print(
        f"{result.replications} replications, {result.n_jobs_total} jobs: {result.n_run} run, "
        f"{result.n_failed} failed in {result.seconds:.1f} s"
    )
    print("\n".join(result.lines))
    print(f"Calibration: {(result.directory / 'calibration.md').resolve()}")
    # Failed jobs leave intervals on fewer folds: the numbers stand, but say so.
    return 1 if result.n_failed else 0


def _report(args: argparse.Namespace) -> int:
    print(f"Report: {render_report(args.directory).resolve()}")
    return 0


def _warn_if_large(config: Config, n_jobs: int) -> None:
    if n_jobs > config.warn_jobs:
        print(
            f"mixbench: warning: {n_jobs:,} jobs, more than warn_jobs ({config.warn_jobs:,}): "
            "a fit and a row file each; narrow the grid, or raise warn_jobs in the config",
            file=sys.stderr,
        )


def _validate(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    tasks = expand(config)
    n_jobs = len(all_jobs(tasks))
    _warn_if_large(config, n_jobs)
    checked = check_data(config)
    print(
        f"{config.name}: {n_jobs} jobs in {len(tasks)} tasks (a data set and a "
        f"fold each) from {len(config.scenarios)} scenario(s) and {len(config.estimators)} "
        "estimator(s)"
    )
    if checked.n_checked < checked.n_scenarios:
        print(
            f"Data: the first data set of {checked.n_checked} of {checked.n_scenarios} "
            f"scenarios builds and splits as configured; the others took over "
            f"{DATA_CHECK_SECONDS:g} s to build (their errors will show as failed jobs)"
        )
    else:
        print("Data: the first data set of each scenario builds and splits as configured")
    return 0


def _list(args: argparse.Namespace) -> int:
    print("Simulators:")
    for name in simulators.available():
        print(f"  {name:<24} {simulators.info(name).description}")
    print("Estimators:")
    for name in estimators.registered():
        entry = estimators.info(name)
        reason = entry.missing_reason()
        note = f"  [unavailable: {reason}]" if reason else ""
        print(f"  {name:<24} {entry.description}{note}")
    print(f"Split schemes: {', '.join(splits.SCHEMES)}")
    print(f"Metrics: {', '.join(metrics.available())}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mixbench",
        description="Benchmark mixed-effects models against fixed-effects and ML baselines.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run a sweep config and write its report")
    run.add_argument("config", help="YAML sweep config")
    run.add_argument("--n-jobs", type=int, default=None, help="parallel workers (-1: all cores)")
    run.add_argument("--out", help="output folder (default reports/<config name>)")
    run.add_argument("--force", action="store_true", help="rerun jobs that already finished")
    run.add_argument(
        "--allow-failures", action="store_true", help="exit 0 even when some jobs failed"
    )
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    run.add_argument(
        "--backend",
        choices=BACKENDS,
        help="loky: worker processes on this machine; dask: a Dask cluster (default: config)",
    )
    run.add_argument(
        "--scheduler",
        help="address of a running Dask scheduler, e.g. tcp://10.0.0.1:8786 "
        "(with --backend dask; default: a local cluster of --n-jobs workers)",
    )
    run.set_defaults(handler=_run)
    calibration = commands.add_parser(
        "calibrate",
        help="measure the coverage of the report's intervals on independent replications",
        description="Run a study's config on independent data sets (its seed replaced per "
        "replication) and measure how often its 95% Nadeau-Bengio intervals contain their "
        "target, and how often its verdicts against the margin are wrong. Simulated data "
        "only: a file cannot be redrawn. Exits 1 when jobs failed.",
    )
    calibration.add_argument("config", help="YAML sweep config")
    calibration.add_argument(
        "--replications",
        type=int,
        default=DEFAULT_REPLICATIONS,
        help=f"independent replications of the study (default {DEFAULT_REPLICATIONS})",
    )
    calibration.add_argument(
        "--out", help="output folder (default reports/<config name>-calibration)"
    )
    calibration.add_argument(
        "--n-jobs", type=int, default=None, help="parallel workers (-1: all cores)"
    )
    calibration.add_argument("--quiet", action="store_true", help="no line per replication")
    calibration.set_defaults(handler=_calibrate)
    report = commands.add_parser("report", help="render the report of a finished sweep folder")
    report.add_argument("directory", help="sweep output folder, e.g. reports/default")
    report.set_defaults(handler=_report)
    validate = commands.add_parser("validate", help="check a config and count its jobs")
    validate.add_argument("config", help="YAML sweep config")
    validate.set_defaults(handler=_validate)
    listing = commands.add_parser("list", help="list simulators, estimators, schemes, metrics")
    listing.set_defaults(handler=_list)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``mixbench`` console script.

    Exit status: 0 done; 1 some jobs failed, or a file could not be written (a full
    disk); 2 an invalid config or command line; 130 interrupted (Ctrl-C). Every error
    is one line on standard error, never a traceback.
    """
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except (ConfigError, FileNotFoundError) as error:
        print(f"mixbench: error: {error}", file=sys.stderr)
        return 2
    except SweepInterrupted as interrupted:
        print(f"mixbench: {interrupted}; rerun to resume", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("mixbench: interrupted", file=sys.stderr)
        return 130
    except OSError as error:  # the store's own errors name their path already
        where = f" ({error.filename})" if getattr(error, "filename", None) else ""
        print(f"mixbench: error: {error.strerror or error}{where}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
