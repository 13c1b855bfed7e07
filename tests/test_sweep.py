"""Ensembles: the vmapped sweep against a loop, dose linearity, sharding over 4 CPU devices, the CLI."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from paracrine import solver
from paracrine import build as B, calibrate, scenario as sc

ROOT = Path(__file__).resolve().parents[1]

TEXT = """
[geometry]
species = "rat"
mesh_size = "0.8 mm"
border_width = "0.5 mm"
[time]
end = "12 h"
dt = "600 s"
[output]
interval = "2 h"
fields = "12 h"
[factors.VEGF]
preset = "VEGF165"
uptake = { border = "1e-3 1/s" }
threshold = "31 pg/mL"
[cells]
secretion = { VEGF = "2.5e-8 pg/cell/s" }
[[injection]]
dose = "1e6 cells"
sites = 3
"""


@pytest.fixture(scope="module")
def built():
    return B.build(sc.loads(TEXT, source="sweep.toml"))


def test_sweep_equals_a_loop_of_runs(built):
    vary = {"cells.dose": [1e5, 1e6], "VEGF.uptake.border": [1e-4, 1e-3]}
    res = calibrate.sweep(built, vary, shard=False)
    assert res["values"].shape == (4, 2) and res["means"].shape == (4, 6, 1, 3)
    dose, uptake = calibrate.resolve(built, list(vary))
    stepper = solver.plan(built.model, built.params, dt=600.0)
    for m, (d, u) in enumerate(res["values"]):
        params = uptake.set(dose.set(built.params, d), u)
        sol = solver.simulate(built.model, params, t_end=12 * 3600.0, dt=600.0, save_at=res["ts"], method=stepper,
                              observe=solver.observe.region_means(built.model))
        np.testing.assert_allclose(res["means"][m], np.asarray(sol.ys), rtol=1e-10, atol=1e-18)


def test_dose_response_is_linear(built):
    res = calibrate.sweep(built, {"cells.dose": [1e5, 1e6, 1e7]}, shard=False)
    auc = np.array([m["VEGF.auc_pg_per_mL_h"] for m in res["metrics"]])
    sec = np.array([m["VEGF.secreted_pg"] for m in res["metrics"]])
    np.testing.assert_allclose(auc / auc[0], [1, 10, 100], rtol=1e-9)
    np.testing.assert_allclose(sec / sec[0], [1, 10, 100], rtol=1e-9)
    assert res["metrics"][2]["VEGF.hours_above_threshold"] >= res["metrics"][0]["VEGF.hours_above_threshold"]


def test_sharded_sweep_equals_unsharded_on_four_devices(tmp_path):
    code = f"""
import jax
jax.config.update("jax_enable_x64", True)
import numpy as np
from paracrine import build as B, calibrate, scenario as sc
assert jax.device_count() == 4
b = B.build(sc.loads({TEXT!r}, source="sweep.toml"))
vary = {{"cells.dose": [1e5, 1e6, 1e7], "VEGF.uptake.border": [1e-4, 1e-3]}}
a = calibrate.sweep(b, vary, shard=True)
u = calibrate.sweep(b, vary, shard=False)
assert a["devices"] == 4 and u["devices"] == 1, (a["devices"], u["devices"])
np.testing.assert_allclose(a["means"], u["means"], rtol=1e-13, atol=0)  # reductions may sum in another order
print("ok", a["values"].shape)
"""
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "ok (6, 2)" in proc.stdout


def test_sweep_errors(built):
    with pytest.raises(ValueError, match=r"sweep value -1.0 for cells.dose; allowed: > 0"):
        calibrate.sweep(built, {"cells.dose": [1e5, -1.0]})
    with pytest.raises(ValueError, match=r"unknown free parameter 'cells.dos'; did you mean 'cells.dose'\?"):
        calibrate.sweep(built, {"cells.dos": [1.0]})
    with pytest.raises(ValueError, match=r"zip needs equally many values"):
        calibrate.sweep(built, {"cells.dose": [1e5, 1e6], "VEGF.uptake.border": [1e-3]}, zip_values=True)


def test_paracrine_sweep_cli(tmp_path, capsys):
    from paracrine.cli import main

    (tmp_path / "s.toml").write_text(TEXT)
    code = main(["sweep", str(tmp_path / "s.toml"), "--vary", "cells.dose=1e5,2e5", "VEGF.uptake.border=0.06 1/min",
                 "--out", str(tmp_path / "sw"), "--precision", "double"])
    assert code == 0, capsys.readouterr().err
    rows = (tmp_path / "sw" / "sweep.csv").read_text().splitlines()
    assert rows[0].startswith("cells.dose [cell],VEGF.uptake.border [1/s],status,VEGF.auc_pg_per_mL_h")
    assert len(rows) == 3 and rows[1].startswith("100000,0.001,success")
    assert json.loads((tmp_path / "sw" / "sweep.json").read_text())["names"] == ["cells.dose", "VEGF.uptake.border"]
    assert "VEGF.exposed_volume_fraction" in rows[0]                    # the run's metric, as for key sweeps
    import matplotlib.pyplot as plt

    assert plt.imread(tmp_path / "sw" / "figures" / "sweep.png")[..., :3].std() > 0.05   # the dose-response figure
    assert main(["sweep", str(tmp_path / "s.toml"), "--vary", "cells.dose=1e5 s", "--out", str(tmp_path / "x")]) == 2
    assert "--vary cells.dose" in capsys.readouterr().err and not (tmp_path / "x").exists()
