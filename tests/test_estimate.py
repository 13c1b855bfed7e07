"""The work estimate before a run, mesh or fit (printed, refused above the limits unless --force),
the heartbeat of a long first chunk, and the budget-closure warning."""

import time

import pytest

from paracrine import geometry
from paracrine import estimate as E, runner, scenario as sc
from paracrine.cli import main

from test_run import COARSE


def test_mesh_and_grid_estimates_before_meshing_are_close():
    nodes, cells = E.lv_mesh_size("rat", 0.7)
    mesh = geometry.lv_ellipsoid("rat", mesh_size=0.7)
    assert nodes == pytest.approx(len(mesh.points), rel=0.2) and cells == pytest.approx(len(mesh.cells), rel=0.2)
    total, tissue = E.lv_grid_size("rat", 0.4)
    grid = geometry.lv_ellipsoid("rat", grid_spacing=0.4)
    assert total == grid.labels.size and tissue == pytest.approx((grid.labels > 0).sum(), rel=0.1)
    # refinement at the sites adds nodes; the default scenario (0.4 mm, 0.25 mm at 3 sites): 6862 nodes
    est = E.run_estimate(sc.default().data)
    assert est.nodes == pytest.approx(6862, rel=0.2) and est.steps is None and "rtol 0.001" in est.line()


def test_the_estimate_line_and_exact_fixed_steps():
    est = E.run_estimate(sc.loads(COARSE).data)
    assert est.steps == 12 * 3600 / 120 and est.field_bytes == 4 * 2 * est.nodes * 4 * 2  # 4 snapshots, 2 pools
    line = est.line()
    assert line.startswith("estimate: ~1.5k nodes, ~5.") and "360 time steps" in line and "kB of fields" in line
    assert est.problems() == []


def _scenario(tmp_path, text):
    p = tmp_path / "s.toml"
    p.write_text(text)
    return str(p)


def test_a_run_too_fine_or_too_long_is_refused_before_meshing(tmp_path, capsys):
    fine = _scenario(tmp_path, COARSE.replace('mesh_size = "0.7 mm"', 'mesh_size = "0.01 mm"'))
    t = time.perf_counter()
    assert main(["run", fine, "--out", str(tmp_path / "x"), "--progress", "off"]) == 2
    assert time.perf_counter() - t < 10   # no meshing
    err = capsys.readouterr().err
    assert err.startswith("paracrine run: estimate: ~") and "nodes is above the limit of 5e+06" in err
    assert 'raise geometry.mesh_size (now "0.01 mm"; about' in err and "or give --force to start it anyway" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.toml"]
    long = _scenario(tmp_path, COARSE.replace('end = "12 h"', 'end = "7 d"').replace('dt = "120 s"', 'dt = "1e-4 s"'))
    assert main(["run", long, "--out", str(tmp_path / "x"), "--progress", "off"]) == 2
    err = capsys.readouterr().err
    assert "6e+09 time steps is above the limit of 1e+06" in err
    assert 'raise time.dt (now "0.0001 s")' in err and "time.rtol" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.toml"]
    with pytest.raises(E.EstimateError):
        E.run_estimate(sc.load(long).data).check()
    E.run_estimate(sc.load(long).data).check(force=True)   # --force: let through


def test_mesh_and_fit_refuse_a_huge_mesh(tmp_path, capsys):
    assert main(["mesh", "--size", "0.005", "--out", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err
    assert "paracrine mesh: estimate: ~" in err and "raise --size (now 0.005 mm; about" in err and "--force" in err
    from pathlib import Path

    ex = Path(__file__).resolve().parents[1] / "examples"
    fit = _scenario(tmp_path, (ex / "fit_yasuda.toml").read_text().replace('mesh_size = "1 mm"', 'mesh_size = "0.01 mm"'))
    assert main(["fit", fit, str(ex / "data" / "yasuda2005_normal.csv"), "--free", "cells.washout",
                 "--out", str(tmp_path / "f")]) == 2
    err = capsys.readouterr().err
    assert "paracrine fit: estimate: ~" in err and "geometry.mesh_size" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.toml"]


def test_a_long_chunk_says_so(monkeypatch, capsys):
    monkeypatch.setattr(runner, "HEARTBEAT_S", 0.05)
    beat = runner._Heartbeat(None, None, 7 * 86400.0, 7)
    beat.start(0, 0.0, 86400.0)
    time.sleep(0.4)
    beat.stop()
    err = capsys.readouterr().err
    assert "paracrine run: simulating 0.0-24.0 h of 168.0 h (chunk 1 of 7, compiling the program first)" in err
    quiet = runner._Heartbeat(None, False, 86400.0, 1)   # --progress off: nothing
    quiet.start(0, 0.0, 3600.0)
    time.sleep(0.2)
    quiet.stop()
    assert capsys.readouterr().err == ""


def test_a_budget_that_does_not_close_is_a_warning():
    m = {"factors": {"VEGF": {"budget_closure_fraction": 8e-2}, "HGF": {"budget_closure_fraction": 5e-5},
                     "FGF": {"budget_closure_fraction": 5e-11}}}
    (w,) = runner.closure_warnings(m, "single")
    assert w.startswith("VEGF: the mass budget closes to 8.0e-02") and "worse than 1e-04 in single precision" in w
    assert [x.split(":")[0] for x in runner.closure_warnings(m, "double")] == ["VEGF", "HGF"]
    assert runner.closure_warnings({"factors": {"X": {"budget_closure_fraction": float("nan")}}}, "double")
    # metrics.json written before the closure had a key of its own
    assert runner.closure_warnings({"factors": {"X": {"budget_pg": {"closure": 1.0}}}}, "double")


def test_fixed_steps_with_binding_and_a_fast_local_sink_are_a_warning():
    """With ECM binding the losses are split from diffusion; a sink confined to some regions and fast
    against the step is split badly (examples/validation/README.md measures 2 % at dt x loss = 0.55,
    125 % at 5.5), so fixed steps above SPLIT_LIMIT / loss warn; error control, slow sinks (the test
    scenarios' 1e-3 /s border uptake at 120 s steps: 0.12) and uniform losses do not."""
    from paracrine import solver

    grid = geometry.box_grid([0, 0], [1, 1], 4, regions={"remote": True, "border": geometry.halfspace(0, 0.5)})
    model = solver.Model(geometry.discretise(grid), factors=("VEGF", "HGF"))
    binding = {"kon": 1.0, "koff": 0.01, "capacity": 1.0}
    fast = model.params(D=1e-4, uptake=[[0.0, 0.5], [0.0, 1e-3]], binding=binding)
    (w,) = runner.split_warnings(model, fast, 60.0)
    assert w.startswith("VEGF: with ECM binding") and "region border (0.5 /s" in w and "time.dt <= 1 s" in w
    assert runner.split_warnings(model, fast, 1.0) == []                       # short enough
    assert runner.split_warnings(model, fast, 1.01) != []
    assert runner.split_warnings(model, fast, None) == []                      # error control
    assert runner.split_warnings(model, model.params(D=1e-4, uptake=[[0.0, 0.5]] * 2), 60.0) == []   # no binding
    uniform = model.params(D=1e-4, uptake=0.5, binding=binding)                # the same loss everywhere commutes
    assert runner.split_warnings(model, uniform, 60.0) == []
