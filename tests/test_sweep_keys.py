"""Sweeps over scenario keys by path: members equal separate runs, grouping by structure, the CLI
(table, figure, progress), and bad keys or values named with their member."""

import csv
import json

import matplotlib.pyplot as plt
import numpy as np
import pytest

from paracrine import runner, scenario as sc, sweepkeys
from test_sweep import TEXT

REPEAT = TEXT.replace('[[injection]]\ndose = "1e6 cells"\nsites = 3',
                      '[[injection]]\ndose = "1e6 cells"\nsites = 3\nrepeat = { every = "3 h", count = 2 }')
assert REPEAT != TEXT


@pytest.fixture(scope="module")
def interval_sweep():
    return sweepkeys.sweep(REPEAT, "s.toml", {"injection[0].repeat.every": ["2 h", "5 h"]})


def test_a_sweep_over_the_repeat_interval_equals_separate_runs(interval_sweep, tmp_path):
    res = interval_sweep
    assert res["groups"] == [[0, 1]]                       # numbers only: one vmapped program
    for row, met in zip(res["rows"], res["metrics"]):
        path = tmp_path / f"every{row['injection[0].repeat.every'].split()[0]}.toml"
        path.write_text(REPEAT.replace('every = "3 h"', f'every = "{row["injection[0].repeat.every"]}"'))
        out = runner.run(sc.load(path), tmp_path / path.stem, progress=False, figures=False)
        m = json.loads((out / "metrics.json").read_text())["factors"]["VEGF"]
        border = m["regions"]["border"]
        assert met["VEGF.auc_pg_per_mL_h"] == pytest.approx(border["auc_pg_per_mL_h"], rel=1e-9)
        assert met["VEGF.peak_mean_pg_per_mL"] == pytest.approx(border["peak_mean_pg_per_mL"], rel=1e-9)
        assert met["VEGF.exposed_volume_fraction"] == pytest.approx(border["exposed_volume_fraction"], abs=1e-12)
        assert met["VEGF.secreted_pg"] == pytest.approx(m["budget_pg"]["secreted"], rel=1e-9)
        assert met["VEGF.budget_closure_fraction"] < 1e-9 and met["status"] == "success"
    a, b = res["metrics"]
    assert a["VEGF.auc_pg_per_mL_h"] != b["VEGF.auc_pg_per_mL_h"]   # the interval changes the course


def test_structural_keys_make_groups_compiled_apart():
    res = sweepkeys.sweep(REPEAT, "s.toml", {"injection[0].repeat.count": [1, 2],
                                             "injection[0].repeat.every": ["2 h", "4 h"]})
    assert res["groups"] == [[0, 1], [2, 3]]               # a number of doses changes the structure
    one = [m["VEGF.auc_pg_per_mL_h"] for m in res["metrics"][:2]]
    assert one[0] == pytest.approx(one[1], rel=1e-12)      # one dose: the interval does not matter
    two = [m["VEGF.auc_pg_per_mL_h"] for m in res["metrics"][2:]]
    assert two[0] > one[0] and two[1] > one[0]


def test_key_paths_values_and_members():
    assert sweepkeys.parse_path("injection[0].repeat.every") == ["injection", 0, "repeat", "every"]
    assert [sweepkeys.parse_value(v) for v in ("3", "2.5", "true", "1 d")] == [3, 2.5, True, "1 d"]
    assert sweepkeys.is_key_path("medium[0].volume") and sweepkeys.is_key_path("geometry.mesh_size")
    assert not sweepkeys.is_key_path("cells.dose") and not sweepkeys.is_key_path("VEGF.uptake.border")
    rows = sweepkeys.members("", {"a": [1, 2], "b": ["x", "y"]})
    assert rows == [{"a": 1, "b": "x"}, {"a": 1, "b": "y"}, {"a": 2, "b": "x"}, {"a": 2, "b": "y"}]
    assert sweepkeys.members("", {"a": [1, 2], "b": ["x", "y"]}, zip_values=True) == [{"a": 1, "b": "x"},
                                                                                       {"a": 2, "b": "y"}]


@pytest.mark.parametrize("vary, message", [
    (["injection[3].dose=1e5 cells"], "--vary injection[3].dose: the scenario has no injection[3] (1 given)"),
    (["injection[0].dose=1e5 kg"], "sweep member 0: injection[0].dose = '1e5 kg'"),
    (["injection[0].repeat.every=2 h,-1 h"], "sweep member 1: injection[0].repeat.every = '-1 h'"),
    (["injection[0]..dose=1"], "is not a key or key[index]"),
    (["injection[0].route=sideways"], "sweep member 0: injection[0].route = 'sideways'"),
])
def test_bad_keys_and_values_are_named_and_nothing_is_left(tmp_path, capsys, vary, message):
    from paracrine.cli import main

    (tmp_path / "s.toml").write_text(REPEAT)
    assert main(["sweep", str(tmp_path / "s.toml"), "--vary", *vary, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert message in err, err
    errors = [line for line in err.strip().splitlines() if not line.startswith("paracrine sweep: estimate:")]
    assert len(errors) == 1 and "Traceback" not in err      # one paragraph (after the work estimate)
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.partial").exists()


def test_cli_key_sweep_writes_table_figure_and_progress(tmp_path, capsys):
    from paracrine.cli import main

    (tmp_path / "s.toml").write_text(REPEAT)
    out = tmp_path / "route"
    assert main(["sweep", str(tmp_path / "s.toml"), "--vary", "injection[0].route=intramyocardial,transendocardial",
                 "--out", str(out), "--progress", "on", "--precision", "double"]) == 0
    cap = capsys.readouterr()
    assert "2 members in 2 group(s) of equal structure (2 compilation(s))" in cap.out, cap.out
    assert "paracrine sweep" in cap.err and "group" in cap.err          # the bar on stderr
    with open(out / "sweep.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["injection[0].route"] for r in rows] == ["intramyocardial", "transendocardial"]
    assert {"VEGF.auc_pg_per_mL_h", "VEGF.exposed_volume_fraction", "VEGF.budget_closure_fraction"} <= set(rows[0])
    assert float(rows[0]["VEGF.auc_pg_per_mL_h"]) != float(rows[1]["VEGF.auc_pg_per_mL_h"])   # other sites, retention
    img = plt.imread(out / "figures" / "sweep.png")
    assert img[..., :3].std() > 0.05
    info = json.loads((out / "sweep.json").read_text())
    assert len(info["groups"]) == 2 and len(info["metrics"]) == 2   # the route moves the sites: two structures
    assert np.isfinite([m["VEGF.auc_pg_per_mL_h"] for m in info["metrics"]]).all()
