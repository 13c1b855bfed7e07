"""Run folders as analysis-ready objects (load_run, paracrine.run), units in every name, region names in
the fields files, and `paracrine compare` of arms."""

import csv
import json
import shutil
import subprocess
import sys
import tomllib
import xml.etree.ElementTree as ET

import h5py
import numpy as np
import pytest

import paracrine
from paracrine import cli, compare as cmp, report, runner, scenario as sc

#: linear in the dose (first-order decay and uptake, no binding or saturable uptake) and quick
TINY = """
title = "tiny"
[geometry]
species = "rat"
mesh_size = "0.9 mm"
border_width = "0.5 mm"
[time]
end = "3 h"
dt = "300 s"
chunk = "1 h"
[output]
interval = "1 h"
fields = "1 h"
exposure = "1 h"
[factors.VEGF]
preset = "VEGF165"
uptake = { border = "1e-3 1/s" }
threshold = "31 pg/mL"
[factors.HGF]
preset = "HGF"
clearance = { remote = "1e-4 1/s" }
[cells]
secretion = { VEGF = "1203 pg / (1e6 cell * 48 h)", HGF = "12280 pg / (1e6 cell * 48 h)" }
[[injection]]
dose = "1e6 cells"
sites = 3
"""


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A: paracrine.run of the scenario as a dict; B: twice the dose; C: the same file through the CLI."""
    tmp = tmp_path_factory.mktemp("runs")
    (tmp / "tiny.toml").write_text(TINY)
    a = paracrine.run(tomllib.loads(TINY), tmp / "one", progress=False)
    twice = TINY.replace('dose = "1e6 cells"', 'dose = "2e6 cells"')
    b = runner.run(sc.loads(twice, source="twice"), tmp / "two", progress=False, figures=False)
    assert cli.main(["run", str(tmp / "tiny.toml"), "--out", str(tmp / "cli"), "--precision", "double",
                     "--progress", "off"]) == 0
    return {"a": a, "b": b, "cli": tmp / "cli", "tmp": tmp}


def _xdmf_items(path):
    """(time, attribute name) -> the HDF5 dataset path of each field, read from the XDMF text itself."""
    root = ET.parse(path).getroot()
    out = {}
    for grid in root.iter("Grid"):
        t = grid.find("Time")
        if t is None:
            continue
        for att in grid.findall("Attribute"):
            out[(float(t.get("Value")), att.get("Name"))] = att.find("DataItem").text.split(":", 1)[1]
    return root, out


def test_load_run_round_trip(runs):
    r = runs["a"]
    out = r.path
    ds = r.dataset
    root, items = _xdmf_items(out / "fields.xdmf")
    with h5py.File(out / "fields.h5", "r") as h5:
        times = sorted({t for t, _ in items})
        assert list(ds["time"].values) == times == [1.0, 2.0, 3.0]
        for (t, name), key in items.items():
            if name == "region":
                continue
            np.testing.assert_array_equal(ds[name].sel(time=t).values, h5[key][()])   # bit for bit
        mesh = next(g for g in root.iter("Grid") if g.get("Name") == "mesh")
        pts = h5[mesh.find("Geometry/DataItem").text.split(":", 1)[1]][()]
        np.testing.assert_array_equal(np.c_[ds["x_mm"], ds["y_mm"], ds["z_mm"]], pts)
    assert set(ds.data_vars) >= {"VEGF_pg_per_mL", "HGF_pg_per_mL", "mean_pg_per_mL", "max_pg_per_mL", "free_pg",
                                 "bound_pg", "node_region_share", "retained_cells"}
    assert ds["VEGF_pg_per_mL"].dims == ("time", "node") and ds["mean_pg_per_mL"].dims == ("course_time", "factor",
                                                                                           "region")
    # region courses equal regions.csv, row by row
    with open(out / "regions.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 3 * 2 * 3
    for row in rows:
        at = ds.sel(course_time=float(row["time_h"]), factor=row["factor"], region=row["region"])
        for col in ("mean_pg_per_mL", "max_pg_per_mL", "free_pg", "bound_pg"):
            assert float(at[col]) == float(row[col]), (row, col)
    # units on every variable and numeric coordinate; the unit the name ends in where it has one
    for name, v in {**ds.data_vars, **ds.coords}.items():
        assert "units" in v.attrs, name
        if v.dtype.kind in "fiu":
            assert v.attrs["units"], name
        if report.unit_of(name):
            assert v.attrs["units"] == report.unit_of(name), name
    assert ds["VEGF_pg_per_mL"].attrs["units"] == "pg/mL" and ds["time"].attrs["units"] == "h"
    # metrics as attributes, equal to metrics.json
    m = json.loads((out / "metrics.json").read_text())
    border = m["factors"]["VEGF"]["regions"]["border"]
    assert ds.attrs["VEGF.border.auc_pg_per_mL_h"] == border["auc_pg_per_mL_h"] > 0
    assert ds.attrs["HGF.budget.secreted_pg"] == m["factors"]["HGF"]["budget_pg"]["secreted"] > 0
    tidy = r.metrics
    assert set(tidy.columns) == {"factor", "region", "metric", "value", "unit"}
    assert r.metric("VEGF", "border", "peak_mean_pg_per_mL") == border["peak_mean_pg_per_mL"]
    assert tidy.loc[tidy.metric == "auc_pg_per_mL_h", "unit"].eq("pg/mL*h").all()
    # the frames are the files; info is run.json
    assert list(r.regions.columns) == list(rows[0]) and len(r.regions) == len(rows)
    assert r.cells["retained_cells"].iloc[0] == pytest.approx(0.136e6, rel=1e-12)
    assert r.info == json.loads((out / "run.json").read_text())
    # the dataset saves as netCDF and reads back
    import xarray as xr

    ds.to_netcdf(out.parent / "one.nc")
    with xr.open_dataset(out.parent / "one.nc") as back:
        np.testing.assert_array_equal(back["HGF_pg_per_mL"].values, ds["HGF_pg_per_mL"].values)
        assert back["mean_pg_per_mL"].attrs["units"] == "pg/mL" and back.attrs["HGF.border.auc_pg_per_mL_h"] > 0


def test_region_names_in_the_fields_files(runs):
    out = runs["a"].path
    root, items = _xdmf_items(out / "fields.xdmf")
    info = {e.get("Name"): e.get("Value") for e in root.iter("Information")}
    with np.load(out / "geometry.npz") as z:
        names = json.loads(str(z["region_names"]))
    assert json.loads(info["region_names"]) == names == {"remote": 1, "border": 2, "core": 3}
    with h5py.File(out / "fields.h5", "r") as h5:
        assert json.loads(h5.attrs["region_names"]) == names
        assert [x.decode() for x in h5["region_names"][()]] == list(names)
        assert list(h5["region_labels"][()]) == list(names.values())
        share = h5["node_region_share"][()]
        labels = h5["node_region"][()]
        cell_labels = h5[items[(1.0, "region")]][()]
        # every dataset meshio wrote says what it holds
        key = items[(2.0, "HGF_pg_per_mL")].lstrip("/")
        assert dict(h5[key].attrs) == {"name": "HGF_pg_per_mL", "time_h": 2.0, "units": "pg/mL", "center": "Node"}
    assert set(np.unique(cell_labels)) == set(names.values())
    np.testing.assert_allclose(share.sum(axis=1), 1.0, atol=1e-12)
    cols = ["remote", "border", "core"]
    np.testing.assert_array_equal(labels, [names[cols[k]] for k in share.argmax(axis=1)])
    ds = runs["a"].dataset
    assert set(ds["node_region"].values) == set(names)
    # a node inside one region only (share 1) carries that region's name
    pure = share.max(axis=1) == 1.0
    assert pure.sum() > 0.5 * len(share)
    assert all(ds["node_region"].values[pure] == np.array(cols)[share[pure].argmax(axis=1)])


def test_run_json_has_a_unit_for_every_number(runs):
    info = runs["a"].info
    units = info["units"]
    paths = list(report._number_paths({k: v for k, v in info.items() if k != "units"}))
    assert len(paths) > 50
    missing = [".".join(p) for p, _ in paths if report.match_unit(p, units) is None]
    assert not missing, missing
    assert units["scenario.time.end"] == "s" and units["scenario.factors.*.D.*"] == "mm^2/s"
    assert units["scenario.cells.secretion.*"] == "pg/cell/s" and units["timings.*"] == "s"
    # the old keys are still there, in internal units
    assert info["scenario"]["time"]["end"] == 3 * 3600.0 and info["steps"] == 36


def test_one_naming_style_with_units(runs):
    out = runs["a"].path
    m = json.loads((out / "metrics.json").read_text())
    keys = set(m["cells"]) | {"time_step_s"}
    for v in m["factors"].values():
        keys |= {k for k in v if k not in ("regions",)}
        for e in v["regions"].values():
            keys |= set(e)
    assert keys >= {"auc_pg_per_mL_h", "peak_mean_pg_per_mL", "mean_above_threshold_h", "exposed_volume_fraction",
                    "budget_closure_fraction", "retained_at_start_cells"}
    assert [k for k in keys if report.unit_of(k) is None] == []
    assert set(m["units"]) >= keys - {"budget_pg"}    # each explained
    for name in ("regions.csv", "cells.csv"):
        with open(out / name) as fh:
            head = next(csv.reader(fh))
        assert [h for h in head if h not in ("factor", "region") and report.unit_of(h) is None] == [], (name, head)
        assert all(h == h.lower() or "_mL" in h for h in head)


def test_python_run_equals_the_cli_run(runs):
    a, c = runs["a"].path, runs["cli"]
    assert isinstance(runs["a"], paracrine.Run) and a.name == "one"
    assert json.loads((a / "metrics.json").read_text()) == json.loads((c / "metrics.json").read_text())
    for name in ("regions.csv", "cells.csv", "scenario.toml"):
        if name == "scenario.toml":   # the dict went through tomlkit: the same scenario, other text
            assert sc.loads((a / name).read_text()).data == sc.loads((c / name).read_text()).data
        else:
            assert (a / name).read_text() == (c / name).read_text(), name
    da, dc = runs["a"].dataset, paracrine.load_run(c).dataset
    for v in ("VEGF_pg_per_mL", "HGF_pg_per_mL"):
        np.testing.assert_array_equal(da[v].values, dc[v].values)
    ia, ic = runs["a"].info, json.loads((c / "run.json").read_text())
    assert ia["scenario"] == ic["scenario"] and ia["precision"] == ic["precision"] == "double"
    assert (a / "figures" / "regions_VEGF.png").is_file()


def test_import_paracrine_stays_light():
    code = ("import sys, paracrine; heavy = [m for m in ('jax', 'xarray', 'pandas', 'h5py', 'meshio') "
            "if m in sys.modules]; assert not heavy, heavy; assert callable(paracrine.load_run) and "
            "callable(paracrine.run); assert 'load_run' in dir(paracrine)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        paracrine.nothing  # noqa: B018


def test_compare_a_run_with_itself(runs):
    a = runs["a"].path
    c = cmp.compare([a, a])
    assert c.names == ["one#1", "one#2"] and c.factors == ["VEGF", "HGF"] and not c.notes
    ratio = c.table["one#2/one#1"].to_numpy(float)
    first = c.table["one#1"].to_numpy(float)
    assert np.isfinite(ratio).sum() > 40
    assert np.all(ratio[np.isfinite(ratio)] == 1.0)
    undefined = ~np.isfinite(ratio)   # 0/0 (e.g. no hours above threshold), or no value (HGF has no threshold)
    assert np.all((first[undefined] == 0) | np.isnan(first[undefined]))


def test_compare_two_doses(runs, tmp_path, capsys):
    """The model is linear in the dose (first-order losses, no binding; the positivity limiter is
    homogeneous too): twice the cells give exactly twice every amount and concentration, the same times."""
    a, b = runs["a"].path, runs["b"]
    c = cmp.compare([a, b])
    t = c.table.set_index(["factor", "region", "metric"])
    col = "two/one"
    ma, mb = (json.loads((p / "metrics.json").read_text()) for p in (a, b))
    for f in ("VEGF", "HGF"):
        for region in ("remote", "border", "core"):
            for k in ("auc_pg_per_mL_h", "peak_mean_pg_per_mL", "peak_max_pg_per_mL", "mean_at_end_pg_per_mL"):
                assert t.loc[(f, region, k), col] == pytest.approx(2.0, rel=1e-6), (f, region, k)
                # the table holds the metrics files' numbers
                assert t.loc[(f, region, k), "one"] == ma["factors"][f]["regions"][region][k]
                assert t.loc[(f, region, k), "two"] == mb["factors"][f]["regions"][region][k]
            for k in ("peak_mean_time_h", "peak_max_time_h", "volume_mm3"):
                assert t.loc[(f, region, k), col] == 1.0
        for k in ("budget_secreted_pg", "budget_decayed_pg", "budget_left_free_pg"):
            assert t.loc[(f, "", k), col] == pytest.approx(2.0, rel=1e-6)
    assert t.loc[("", "", "retained_at_start_cells"), col] == pytest.approx(2.0, rel=1e-12)
    # the exposed share is not linear in the dose: more of the border zone above threshold, but not twice
    share = t.loc[("VEGF", "border", "exposed_volume_fraction"), col]
    assert 1.0 < share < 2.0
    # the command: printed table, files
    out = tmp_path / "cmp"
    assert cli.main(["compare", str(a), str(b), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "ratios to one" in printed and "two/one" in printed and "auc_pg_per_mL_h" in printed
    assert "remote" not in printed.split("two/one", 1)[1]   # the border zone only, unless --all-regions
    with open(out / "compare.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == len(c.table)
    row = next(r for r in rows if (r["factor"], r["region"], r["metric"]) == ("HGF", "border", "auc_pg_per_mL_h"))
    assert float(row["two/one"]) == pytest.approx(2.0, rel=1e-6) and row["unit"] == "pg/mL*h"
    js = json.loads((out / "compare.json").read_text())
    assert [r["name"] for r in js["runs"]] == ["one", "two"] and js["region"] == "border"
    key = ("HGF", "border", "auc_pg_per_mL_h")
    jrow = next(r for r in js["rows"] if (r["factor"], r["region"], r["metric"]) == key)
    assert jrow["values"]["one"] == ma["factors"]["HGF"]["regions"]["border"]["auc_pg_per_mL_h"]
    assert (out / "compare.png").stat().st_size > 20000


def _edited_copy(src, dst, rename=None, drop=None):
    """A copy of a run folder with factors renamed or dropped in metrics.json, regions.csv and run.json."""
    shutil.copytree(src, dst)
    rename = rename or {}
    m = json.loads((dst / "metrics.json").read_text())
    m["factors"] = {rename.get(f, f): v for f, v in m["factors"].items() if f != drop}
    (dst / "metrics.json").write_text(json.dumps(m))
    info = json.loads((dst / "run.json").read_text())
    info["scenario"]["factors"] = {rename.get(f, f): v for f, v in info["scenario"]["factors"].items() if f != drop}
    (dst / "run.json").write_text(json.dumps(info))
    with open(dst / "regions.csv") as fh:
        rows = [r for r in csv.DictReader(fh) if r["factor"] != drop]
    with open(dst / "regions.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows([dict(r, factor=rename.get(r["factor"], r["factor"])) for r in rows])
    return dst


def test_compare_different_factors(runs, tmp_path, capsys):
    a = runs["a"].path
    only_vegf = _edited_copy(a, tmp_path / "vegf-only", drop="HGF")
    c = cmp.compare([a, only_vegf])
    assert c.factors == ["VEGF"] and set(c.table["factor"]) == {"VEGF", ""}
    assert c.notes == ["one: factors ['HGF'] left out (not in every run)"]
    assert cli.main(["compare", str(a), str(only_vegf), "--out", str(tmp_path / "c"), "--no-figures"]) == 0
    assert "note: one: factors ['HGF'] left out" in capsys.readouterr().err
    other = _edited_copy(a, tmp_path / "other", rename={"VEGF": "FGF2", "HGF": "SDF-1a"})
    with pytest.raises(cmp.CompareError, match=r"the runs have no factors in common \(one: \['VEGF', 'HGF'\]; "
                                               r"other: \['FGF2', 'SDF-1a'\]\)"):
        cmp.compare([a, other])
    assert cli.main(["compare", str(a), str(other), "--out", str(tmp_path / "d")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("paracrine compare: the runs have no factors in common") and "Traceback" not in err
    assert err.count("\n") == 1 and not (tmp_path / "d").exists()
    with pytest.raises(cmp.CompareError, match=r"--region scar: not a region of every run; allowed: \['remote', "
                                               r"'border', 'core'\]"):
        cmp.compare([a, a], region="scar")
    with pytest.raises(cmp.CompareError, match="at least two runs, got 1"):
        cmp.compare([a])


def test_bad_run_folders_are_refused(runs, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(paracrine.RunFolderError, match=r"empty is not a complete run folder: run.json, metrics.json, "
                                                       r"regions.csv, cells.csv, fields.xdmf, fields.h5 are missing"):
        paracrine.load_run(empty)
    some = tmp_path / "some"
    shutil.copytree(runs["a"].path, some)
    (some / "fields.h5").unlink()
    with pytest.raises(paracrine.RunFolderError, match=r"some is not a complete run folder: fields.h5 is missing"):
        paracrine.load_run(some)
    with pytest.raises(paracrine.RunFolderError, match=r"run.json is a file, not a run folder; give the folder"):
        paracrine.load_run(runs["a"].path / "run.json")
    with pytest.raises(paracrine.RunFolderError, match=r"nowhere: no such run folder"):
        paracrine.load_run(tmp_path / "nowhere")
    # an interrupted run (stopped after its first chunk): its OUT.partial, or OUT itself
    out = tmp_path / "cut"
    with pytest.raises(KeyboardInterrupt):
        runner.run(sc.loads(TINY), out, progress=False, figures=False, checkpoint_every=0, _stop_after=1)
    assert runner.partial_dir(out).is_dir() and not out.exists()
    capsys.readouterr()
    for path in (out, runner.partial_dir(out)):
        with pytest.raises(paracrine.RunFolderError, match=rf"cut.partial is an interrupted run: .* `paracrine run "
                                                           rf"--resume {out}`"):
            paracrine.load_run(path)
    assert cli.main(["compare", str(runs["a"].path), str(runner.partial_dir(out)), "--no-figures",
                     "--out", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("paracrine compare: ") and "interrupted run" in err and err.count("\n") == 1
    # resumed through paracrine.run, it loads
    done = paracrine.run(out=out, resume=True, progress=False, figures=False)
    assert done.path == out and done.metrics_json == runs["a"].metrics_json


def test_runs_written_before_units_in_names_still_load(runs, tmp_path):
    old = tmp_path / "old"
    shutil.copytree(runs["a"].path, old)
    new = json.loads((old / "metrics.json").read_text())
    back = {v: k for k, v in report.OLD_METRIC_KEYS.items()}
    m = json.loads(json.dumps(new))
    for v in m["factors"].values():
        v["regions"] = {r: {back.get(k, k): x for k, x in e.items()} for r, e in v["regions"].items()}
        v["budget_pg"]["closure"] = v.pop("budget_closure_fraction")
    m["cells"] = {back.get(k, k): x for k, x in m["cells"].items()}
    assert "auc" in m["factors"]["VEGF"]["regions"]["border"]
    (old / "metrics.json").write_text(json.dumps(m))
    (old / "cells.csv").write_text((old / "cells.csv").read_text().replace("retained_cells", "cells_retained"))
    r = paracrine.load_run(old)
    a = runs["a"].metrics.sort_values(["factor", "region", "metric"]).reset_index(drop=True)
    b = r.metrics.sort_values(["factor", "region", "metric"]).reset_index(drop=True)
    assert a.equals(b)
    assert list(r.cells.columns) == ["time_h", "retained_cells"]


def test_voxel_grid_run_loads_with_voxels_as_nodes(tmp_path):
    """On a voxel grid the fields are cell data of the tissue voxels: the dataset's nodes are those voxels
    (at their centres), each in the region of its label."""
    path = tmp_path / "grid.toml"
    path.write_text(TINY.replace('mesh_size = "0.9 mm"', 'grid_spacing = "0.5 mm"'))
    with pytest.raises(ValueError, match="precision = 'single', but jax_enable_x64 is on in this process"):
        paracrine.run(path, tmp_path / "g32", precision="single")
    assert not (tmp_path / "g32").exists() and not (tmp_path / "g32.partial").exists()
    r = paracrine.run(path, precision="double", figures=False, out=tmp_path / "g")
    ds = r.dataset
    _, items = _xdmf_items(r.path / "fields.xdmf")
    with h5py.File(r.path / "fields.h5", "r") as h5:
        labels = h5[items[(3.0, "region")]][()]
        np.testing.assert_array_equal(ds["VEGF_pg_per_mL"].sel(time=3.0).values, h5[items[(3.0, "VEGF_pg_per_mL")]][()])
    with np.load(r.path / "geometry.npz") as z:
        lab, h, o = z["labels"], z["spacing"], z["origin"]
    idx = np.argwhere(lab > 0)
    assert ds.sizes["node"] == len(idx) == len(labels)
    np.testing.assert_allclose(np.c_[ds["x_mm"], ds["y_mm"], ds["z_mm"]], idx * h + o, atol=1e-9)  # voxel centres
    np.testing.assert_array_equal(ds["node_region_label"].values, labels)
    np.testing.assert_array_equal(ds["node_region_label"].values, lab[tuple(idx.T)])
    # the region mean from the voxel field equals regions.csv (equal voxel volumes)
    border = ds["node_region"].values == "border"
    want = float(ds["mean_pg_per_mL"].sel(course_time=3.0, factor="VEGF", region="border"))
    assert float(ds["VEGF_pg_per_mL"].sel(time=3.0).values[border].mean()) == pytest.approx(want, rel=1e-5)
