"""The file source reads a directory of Parquet parts, as warehouses export them, into the
same Dataset as one file, and reads only the columns its roles name."""

import pandas as pd
import polars as pl
import pytest

import simulators._file as file_source
from simulators import simulate


@pytest.fixture
def table():
    n = 60
    return pl.DataFrame(
        {
            "y": [float(i % 7) for i in range(n)],
            "user": [f"u{i % 9}" for i in range(n)],
            "item": [i % 5 for i in range(n)],
            "x": [i / 10 for i in range(n)],
            "day": [1 + i // 20 for i in range(n)],
            "unused": ["text"] * n,
        }
    )


ROLES = {"target": "y", "groups": ["user", "item"], "features": ["x"], "time": "day"}


def _sorted(data):
    return data.frame.sort_values(["day", "user", "item", "x"]).reset_index(drop=True)


def test_plain_parts_give_the_single_files_data(tmp_path, table):
    table.write_parquet(tmp_path / "all.parquet")
    parts = tmp_path / "export"
    parts.mkdir()
    for index, part in enumerate(table.iter_slices(n_rows=25)):
        part.write_parquet(parts / f"part-{index}.parquet")
    single = simulate("file", path=str(tmp_path / "all.parquet"), **ROLES)
    split = simulate("file", path=str(parts), **ROLES)
    pd.testing.assert_frame_equal(single.frame, split.frame)  # parts are read in name order
    assert split.meta["hash"] == single.meta["hash"]


def test_hive_partitions_give_the_single_files_data(tmp_path, table):
    table.write_parquet(tmp_path / "all.parquet")
    hive = tmp_path / "hive"
    for (day,), part in table.group_by(["day"], maintain_order=True):
        (hive / f"day={day}").mkdir(parents=True)
        part.drop("day").write_parquet(hive / f"day={day}" / "part-0.parquet")
    single = simulate("file", path=str(tmp_path / "all.parquet"), **ROLES)
    split = simulate("file", path=str(hive), **ROLES)
    assert list(split.frame.columns) == list(single.frame.columns)  # the roles' order
    pd.testing.assert_frame_equal(_sorted(single), _sorted(split), check_dtype=False)
    assert split.frame["day"].tolist() == sorted(split.frame["day"])


def test_only_the_columns_the_roles_name_are_read(tmp_path, table, monkeypatch):
    table.write_parquet(tmp_path / "all.parquet")
    parts = tmp_path / "export"
    parts.mkdir()
    table.write_parquet(parts / "part-0.parquet")
    plans = []
    real_scan = file_source._scan

    def recording_scan(path):
        lazy = real_scan(path)
        original_select = lazy.select

        def select(*columns):
            chosen = original_select(*columns)
            plans.append(chosen.explain())
            return chosen

        lazy.select = select
        return lazy

    monkeypatch.setattr(file_source, "_scan", recording_scan)
    for path in (tmp_path / "all.parquet", parts):
        data = simulate("file", path=str(path), **ROLES)
        assert "unused" not in data.frame.columns
    # The optimised plans project the scans onto the roles' columns: "unused" is
    # never read from disk.
    assert len(plans) == 2
    for plan in plans:
        assert "PROJECT 5/6 COLUMNS" in plan and "unused" not in plan


def test_a_directory_without_parts_or_with_a_missing_column_is_named(tmp_path, table):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="params.path: directory .* holds no .parquet file"):
        simulate("file", path=str(tmp_path / "empty"), **ROLES)
    parts = tmp_path / "export"
    parts.mkdir()
    table.write_parquet(parts / "part-0.parquet")
    with pytest.raises(ValueError, match="params.groups: column 'usr' not in export/"):
        simulate("file", path=str(parts), **ROLES | {"groups": ["usr"]})
