"""Where and how the benchmarks record what they measured."""

from __future__ import annotations

import json
import os
import platform
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd


def machine() -> dict[str, Any]:
    """The machine and library versions a measurement was taken with."""
    return {
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "cpus": os.cpu_count(),
        "numpy": np.__version__,
        "pandas": pd.__version__,
    }


def write_results(path: Path, document: Any, root: Path) -> None:
    """Write ``document`` as JSON to ``path`` (creating its folder) and say where."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2, default=str) + "\n")
    print(f"results written to {path.relative_to(root)}")
