"""`paracrine run` end to end: every output, the budget, XDMF read back, kill and resume."""

import csv
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from paracrine import runner, scenario as sc

ROOT = Path(__file__).resolve().parents[1]

COARSE = """
title = "coarse test"
[geometry]
species = "rat"
mesh_size = "0.7 mm"
border_width = "0.5 mm"
[time]
end = "12 h"
dt = "120 s"
chunk = "2 h"
[output]
interval = "1 h"
fields = "3 h"
maps = ["3 h", "12 h"]
exposure = "2 h"
[factors.VEGF]
preset = "VEGF165"
uptake = { border = "1e-3 1/s" }
binding = true
threshold = "31 pg/mL"
[factors.HGF]
preset = "HGF"
clearance = { remote = "1e-4 1/s" }
[cells]
secretion = { VEGF = "1203 pg / (1e6 cell * 48 h)", HGF = "12280 pg / (1e6 cell * 48 h)" }
hypoxia = { border = 2.0 }
[[injection]]
dose = "1e6 cells"
sites = 3
[[medium]]
time = "2 h"
route = "intracoronary"
rate = "10 uL/min"
duration = "30 min"
concentration = { VEGF = "4 ng/mL" }
"""


def write_scenario(tmp_path, text=COARSE, name="coarse.toml"):
    p = tmp_path / name
    p.write_text(text)
    return p


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """One uninterrupted coarse run (float64: the tests' precision)."""
    tmp = tmp_path_factory.mktemp("ref")
    path = write_scenario(tmp)
    out = runner.run(sc.load(path), tmp / "run", progress=False)
    return path, out


def read_csv(path):
    with open(path) as fh:
        return list(csv.DictReader(fh))


def test_run_writes_every_output(reference):
    _, out = reference
    for name in ("fields.h5", "fields.xdmf", "regions.csv", "cells.csv", "metrics.json", "run.json", "scenario.toml",
                 "figures/regions_VEGF.png", "figures/regions_HGF.png", "figures/maps_VEGF.png", "figures/cells.png"):
        assert (out / name).is_file(), name
    assert not (out / "checkpoints").exists() and not runner.partial_dir(out).exists()
    info = json.loads((out / "run.json").read_text())
    assert info["status"] == "success" and info["precision"] == "double"
    assert info["scenario"]["time"]["end"] == 12 * 3600.0 and "jax" in info["versions"]
    assert info["device"]["platform"] == "cpu" and info["timings"]["total_s"] > 0
    assert info["geometry"]["negative_couplings"]["count"] > 0 and info["scenario"]["geometry"]["operator"] == "p1"
    rows = read_csv(out / "regions.csv")
    assert len(rows) == 12 * 2 * 3  # times x factors x regions
    assert set(rows[0]) == {"time_h", "factor", "region", "mean_pg_per_mL", "max_pg_per_mL", "free_pg", "bound_pg"}
    vals = np.array([[float(r[k]) for k in ("mean_pg_per_mL", "max_pg_per_mL", "free_pg", "bound_pg")] for r in rows])
    assert np.all(np.isfinite(vals)) and vals.min() >= 0
    assert any(float(r["bound_pg"]) > 0 for r in rows if r["factor"] == "VEGF")  # binding on for VEGF
    assert all(float(r["bound_pg"]) == 0 for r in rows if r["factor"] == "HGF")


def test_budget_closes_and_metrics_are_consistent(reference):
    _, out = reference
    m = json.loads((out / "metrics.json").read_text())
    # the closure is checked at the end of the run: no warning here, in metrics.json as in run.json
    assert m["warnings"] == [] == json.loads((out / "run.json").read_text())["warnings"]
    rows = read_csv(out / "regions.csv")
    for f, v in m["factors"].items():
        b = v["budget_pg"]
        assert b["secreted"] > 0 and v["budget_closure_fraction"] < 1e-6, (f, b)
        border = [r for r in rows if r["factor"] == f and r["region"] == "border"]
        means = np.array([0.0] + [float(r["mean_pg_per_mL"]) for r in border])
        t = np.array([0.0] + [float(r["time_h"]) for r in border])
        reg = v["regions"]["border"]
        # metrics are accumulated at every (2-min) step: the hourly frames are a subsample (the 30-min
        # infusion at 2 h falls between them); the every-step check is in test_metrics.py
        assert reg["auc_pg_per_mL_h"] == pytest.approx(np.trapezoid(means, t), rel=0.05)
        assert reg["peak_mean_pg_per_mL"] >= means.max() * (1 - 1e-5)  # the CSV holds 6 digits
        assert reg["peak_max_pg_per_mL"] >= max(float(r["max_pg_per_mL"]) for r in border) * (1 - 1e-5)
        assert 0 < reg["peak_mean_time_h"] <= 12 and reg["peak_mean_time_h"] * 30 == pytest.approx(
            round(reg["peak_mean_time_h"] * 30))  # a step end
    vegf = m["factors"]["VEGF"]
    assert vegf["budget_pg"]["degraded_bound"] >= 0 and vegf["budget_pg"]["left_bound"] > 0
    share = vegf["regions"]["border"]["exposed_volume_fraction"]
    assert 0 <= share <= 1
    # secreted by the cells (closed form, hypoxia-weighted by site) plus the intracoronary infusion
    assert m["cells"]["retained_at_start_cells"] == pytest.approx(0.136e6, rel=1e-6)


def test_fields_xdmf_read_back_by_meshio(reference):
    import meshio

    _, out = reference
    rows = read_csv(out / "regions.csv")
    with meshio.xdmf.TimeSeriesReader(str(out / "fields.xdmf")) as r:
        points, cells = r.read_points_cells()
        times, data = [], []
        for k in range(r.num_steps):
            t, pd, cd = r.read_data(k)
            times.append(t)
            data.append((pd, cd))
    assert times == [3.0, 6.0, 9.0, 12.0]
    pd, cd = data[-1]
    assert set(pd) == {"VEGF_pg_per_mL", "VEGF_bound_pg_per_mL", "HGF_pg_per_mL"}
    assert set(np.unique(cd["region"][0])) == {1, 2, 3}
    # the region mean from the field equals regions.csv (lumped mass as weights)
    from paracrine import geometry

    disc = geometry.discretise(geometry.Mesh(points, cells[0].data, cd["region"][0], {"remote": 1, "border": 2, "core": 3}))
    border = disc.mass_region[:, 1]
    mean = float(border @ pd["HGF_pg_per_mL"] / border.sum())
    want = next(float(r["mean_pg_per_mL"]) for r in rows if r["time_h"] == "12" and r["factor"] == "HGF"
                and r["region"] == "border")
    assert mean == pytest.approx(want, rel=1e-5)


def test_cells_csv_follows_the_survival_model(reference):
    _, out = reference
    rows = read_csv(out / "cells.csv")
    t = np.array([float(r["time_h"]) for r in rows]) * 3600.0
    n = np.array([float(r["retained_cells"]) for r in rows])
    kf, ks = math.log(2) / 900.0, math.log(2) / (3.6 * 86400)
    np.testing.assert_allclose(n, 0.136e6 * (0.45 * np.exp(-kf * t) + 0.55 * np.exp(-ks * t)), rtol=1e-6)


def test_run_refuses_to_overwrite(reference, tmp_path):
    path, out = reference
    with pytest.raises(runner.RunError, match="exists and is not empty"):
        runner.run(sc.load(path), out, progress=False)
    with pytest.raises(runner.RunError, match="nothing to resume"):
        runner.run(None, tmp_path / "none", resume=True, progress=False)


def _compare_runs(a: Path, b: Path):
    assert (a / "regions.csv").read_text() == (b / "regions.csv").read_text()
    assert (a / "cells.csv").read_text() == (b / "cells.csv").read_text()
    assert json.loads((a / "metrics.json").read_text()) == json.loads((b / "metrics.json").read_text())
    import h5py

    with h5py.File(a / "fields.h5") as fa, h5py.File(b / "fields.h5") as fb:
        assert sorted(fa) == sorted(fb)
        for k in fa:
            np.testing.assert_array_equal(fa[k][()], fb[k][()])


def test_interrupted_run_resumes_to_identical_result(reference, tmp_path):
    path, ref = reference
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        runner.run(sc.load(path), out, progress=False, checkpoint_every=0, _stop_after=3, figures=False)
    part = runner.partial_dir(out)
    assert part.is_dir() and not out.exists()
    assert len(list((part / "checkpoints").glob("*.npz"))) == 3
    with pytest.raises(runner.RunError, match="holds an interrupted run; continue it with --resume"):
        runner.run(sc.load(path), out, progress=False)
    done = runner.run(None, out, resume=True, progress=False, figures=False)
    assert done == out and not part.exists()
    assert json.loads((out / "run.json").read_text())["resumed"] is True
    _compare_runs(ref, out)


def test_sigkill_then_resume_equals_uninterrupted(reference, tmp_path):
    """A real SIGKILL of `paracrine run` after its first checkpoint, then `--resume`."""
    path, ref = reference
    out = tmp_path / "killed"
    part = runner.partial_dir(out)
    cmd = [sys.executable, "-m", "paracrine.cli", "run", str(path), "--out", str(out), "--precision", "double",
           "--device", "cpu", "--checkpoint-every", "0", "--progress", "off"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path)
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if part.is_dir() and list((part / "checkpoints").glob("0*.npz")):
            break
        time.sleep(0.002)
    assert proc.poll() is None, proc.communicate()
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert part.is_dir() and not out.exists()  # a killed run never looks complete
    done = subprocess.run([sys.executable, "-m", "paracrine.cli", "run", "--resume", str(out), "--precision", "double",
                           "--device", "cpu", "--progress", "off"], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "resuming" in done.stdout
    _compare_runs(ref, out)


@pytest.mark.parametrize("at", ["write_fields", pytest.param("metrics", marks=pytest.mark.slow),
                                pytest.param("plot_all", marks=pytest.mark.slow)])
def test_sigkill_during_the_final_writes_leaves_no_complete_looking_folder(reference, tmp_path, at):
    """SIGKILL while the outputs are written (in the middle of fields.h5, after metrics.json, in the
    figures): only OUT.partial exists, and --resume finishes it to the uninterrupted result."""
    path, ref = reference
    out = tmp_path / "killed"
    code = f"""
import os, signal, sys
from paracrine import report
from paracrine.cli import main
real = getattr(report, {at!r})
def dying(*args, **kw):
    result = real(*args, **kw) if {at!r} != "write_fields" else None
    if {at!r} == "write_fields":   # part of the file written, then killed
        with open(args[0].with_suffix(".h5"), "wb") as f:
            f.write(b"half")
    os.kill(os.getpid(), signal.SIGKILL)
setattr(report, {at!r}, dying)
sys.exit(main(["run", {str(path)!r}, "--out", {str(out)!r}, "--precision", "double", "--device", "cpu",
               "--progress", "off"]))
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=400)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    part = runner.partial_dir(out)
    assert part.is_dir() and not out.exists()  # never a folder without .partial
    done = subprocess.run([sys.executable, "-m", "paracrine", "run", "--resume", str(out), "--precision", "double",
                           "--device", "cpu", "--progress", "off"], capture_output=True, text=True, cwd=tmp_path,
                          timeout=400)
    assert done.returncode == 0, done.stderr
    assert out.is_dir() and not part.exists()
    _compare_runs(ref, out)


def test_cli_reports_scenario_errors(tmp_path, capsys):
    from paracrine.cli import main

    bad = write_scenario(tmp_path, COARSE.replace('end = "12 h"', 'end = "12 kg"'), "bad.toml")
    assert main(["run", str(bad), "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "bad.toml: time.end = '12 kg' has dimension [mass]" in err
    assert not (tmp_path / "x").exists() and not (tmp_path / "x.partial").exists()  # nothing left behind
    assert main(["run", "--print-default"]) == 0
    assert capsys.readouterr().out == sc.default_text()


def test_voxel_grid_run_writes_hexahedra(tmp_path):
    import meshio

    text = COARSE.replace('mesh_size = "0.7 mm"', 'grid_spacing = "0.4 mm"').replace('end = "12 h"', 'end = "3 h"') \
        .replace('maps = ["3 h", "12 h"]', 'maps = ["2 h"]')
    out = runner.run(sc.load(write_scenario(tmp_path, text)), tmp_path / "grid", progress=False, figures=True)
    m = json.loads((out / "metrics.json").read_text())
    assert all(v["budget_closure_fraction"] < 1e-9 for v in m["factors"].values())
    with meshio.xdmf.TimeSeriesReader(str(out / "fields.xdmf")) as r:
        points, cells = r.read_points_cells()
        assert cells[0].type == "hexahedron"
        times = [r.read_data(k)[0] for k in range(r.num_steps)]
        t, pd, cd = r.read_data(0)
    assert times == [2.0, 3.0]  # the map time gets a snapshot of its own; fields every 3 h
    assert len(cd["VEGF_pg_per_mL"][0]) == len(cells[0].data) and (out / "figures" / "maps_VEGF.png").is_file()


def test_failure_before_the_first_checkpoint_leaves_nothing(tmp_path, capsys):
    from paracrine.cli import main

    # forward Euler at dt = 1 h is unstable on this mesh: refused before the first step
    path = write_scenario(tmp_path, COARSE.replace('dt = "120 s"', 'dt = "1 h"\nmethod = "euler"'))
    assert main(["run", str(path), "--out", str(tmp_path / "x"), "--progress", "off"]) == 2
    err = capsys.readouterr().err
    assert "paracrine run:" in err and "stable" in err
    assert not (tmp_path / "x").exists() and not (tmp_path / "x.partial").exists()
    # a site outside the tissue is found after the scenario loads, while building: also nothing left
    path = write_scenario(tmp_path, COARSE.replace("sites = 3", "sites = [[0, 0, 0]]"), "out.toml")
    assert main(["run", str(path), "--out", str(tmp_path / "y"), "--progress", "off"]) == 2
    assert "injection[0].sites[0] = [0.0, 0.0, 0.0] mm lies outside the tissue" in capsys.readouterr().err
    assert not (tmp_path / "y.partial").exists()


def test_missing_device_is_a_clear_error(tmp_path):
    import jax

    if any(d.platform == "gpu" for d in jax.devices()):
        pytest.skip("a GPU is present")
    proc = subprocess.run([sys.executable, "-m", "paracrine.cli", "run", "--device", "gpu", "--out", str(tmp_path / "g")],
                          capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 2
    assert "--device gpu: JAX has no such device here" in proc.stderr and "paracrine-pde[gpu]" in proc.stderr
    assert not (tmp_path / "g.partial").exists()


def test_error_controlled_run_records_its_steps_and_agrees_with_fixed_steps(tmp_path):
    """time.rtol (the default): run.json records the steps taken and refused and the error estimate;
    the border-zone AUC agrees with fixed 30 s steps."""
    base = COARSE.replace("binding = true\n", "").replace('end = "12 h"', 'end = "6 h"') \
        .replace('maps = ["3 h", "12 h"]', 'maps = ["3 h"]')
    fixed = runner.run(sc.load(write_scenario(tmp_path, base.replace('dt = "120 s"', 'dt = "30 s"'), "f.toml")),
                       tmp_path / "fixed", progress=False, figures=False)
    adaptive = runner.run(sc.load(write_scenario(tmp_path, base.replace('dt = "120 s"', "rtol = 1e-4"), "a.toml")),
                          tmp_path / "adaptive", progress=False, figures=False)
    info = json.loads((adaptive / "run.json").read_text())
    assert info["status"] == "success" and info["rtol"] == 1e-4 and "TRBDF2" in info["stepper"]
    assert info["steps"] > 0 and info["steps_rejected"] >= 0
    assert 0 < info["error_estimate"]["largest_scaled_local_error"] <= 1.0
    a = json.loads((adaptive / "metrics.json").read_text())["factors"]
    f = json.loads((fixed / "metrics.json").read_text())["factors"]
    for fac in ("VEGF", "HGF"):
        x, y = a[fac]["regions"]["border"]["auc_pg_per_mL_h"], f[fac]["regions"]["border"]["auc_pg_per_mL_h"]
        assert x == pytest.approx(y, rel=2e-3), fac
        assert a[fac]["budget_closure_fraction"] < 1e-9


def test_dt_and_rtol_together_are_refused(tmp_path):
    text = COARSE.replace('dt = "120 s"', 'dt = "120 s"\nrtol = 1e-3')
    with pytest.raises(sc.ScenarioError, match=r"time gives both dt and rtol"):
        sc.load(write_scenario(tmp_path, text))
    with pytest.raises(sc.ScenarioError, match=r"time.rtol = 2; allowed: a number in \(0, 1\)"):
        sc.load(write_scenario(tmp_path, COARSE.replace('dt = "120 s"', "rtol = 2"), "b.toml"))
