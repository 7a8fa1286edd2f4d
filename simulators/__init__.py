"""Data generators with known truth, each returning a :class:`Dataset`."""

from simulators._dataset import FAMILIES, Dataset, frame_hash
from simulators._params import flatten, merge_params, unflatten
from simulators._registry import SimulatorInfo, available, info, simulate

__all__ = [
    "FAMILIES",
    "Dataset",
    "SimulatorInfo",
    "available",
    "flatten",
    "frame_hash",
    "info",
    "merge_params",
    "simulate",
    "unflatten",
]
