"""Data as measured: ELISA per mg tissue / protein, identifiability (dof, rank), LM's flat-loss stop,
readable units (pg/1e6 cells/day, half-lives), fitted.toml kept as written (tomlkit), fit progress."""

import json
import math

import jax.numpy as jnp
import numpy as np
import pytest

from paracrine import build as B, calibrate, data as pdata, fitreport, scenario as sc
from paracrine.data import DataError
from paracrine.fitting.optimize import FTOL, STATUS, levenberg_marquardt

PDE = """# a small LV: secretion from ELISA data
title = "ELISA per mg"   # kept

[geometry]
species = "rat"
mesh_size = "1.2 mm"
border_width = "0.6 mm"

[time]
end = "1 d"
dt = "1800 s"

[factors.VEGF]
preset = "VEGF165"
uptake = { border = "1e-3 1/s" }

[cells]
secretion = { VEGF = "2.5e-8 pg/cell/s" }   # the truth of the twin experiment

[[injection]]
dose = "1e6 cells"
sites = 3
"""

CELLS = """# cells only: the survival model's closed form
[geometry]
species = "rat"
mesh_size = "1 mm"

[time]
end = "28 d"

[factors.VEGF]
preset = "VEGF165"

[cells]
secretion = { VEGF = "1e-8 pg/cell/s" }
fast_fraction = 0.5           # start of the fit
fast_half_life = "3 d"
slow_half_life = "30 d"

[[injection]]
dose = "2e6 cells"
sites = 1
retention = 0.5               # start of the fit: washout 0.5
"""

DENSITY, PROTEIN = pdata.TISSUE_DENSITY[0], pdata.PROTEIN_PER_TISSUE[0]   # g/mL, mg/mg
TIMES, WHERE = (6, 12, 24), ("border", "tissue")


@pytest.fixture(scope="module")
def pde():
    s = sc.loads(PDE, source="pde.toml")
    b = B.build(s)
    rows = [(2 + k, [str(t), "concentration", "VEGF", w, "1", "1"])
            for k, (t, w) in enumerate((t, w) for t in TIMES for w in WHERE)]
    probe = pdata.from_rows(["time [h]", "quantity", "factor", "where", "value [pg/mL]", "sd [pg/mL]"], rows, s)
    pg_per_ml = calibrate.predict(b, probe) * 1e3          # the truth, in pg/mL
    return s, b, pg_per_ml


def _csv(path, unit, values, *, header=(), quantity="concentration"):
    lines = list(header) + [f"time [h],quantity,factor,where,value [{unit}],sd [{unit}]"]
    for (t, w), v in zip(((t, w) for t in TIMES for w in WHERE), values):
        lines.append(f"{t},{quantity},VEGF,{w},{float(v)!r},{0.05 * float(v)!r}")
    path.write_text("\n".join(lines) + "\n")
    return path


# ---- units ---------------------------------------------------------------------------------------------------

def test_per_mg_tissue_and_protein_units_convert_with_density_and_protein_content():
    s = sc.loads(CELLS, source="c.toml")
    hdr = ["time [h]", "quantity", "factor", "where", "value", "sd", "unit"]
    rows = [(2, ["1", "concentration", "VEGF", "tissue", "2", "1", "pg/mg tissue"]),
            (3, ["1", "concentration", "VEGF", "tissue", "2", "1", "ng/g tissue"]),
            (4, ["1", "concentration", "VEGF", "tissue", "2", "1", "pg/mg protein"]),
            (5, ["1", "concentration", "VEGF", "tissue", "2", "1", "pg/mL"])]
    obs = pdata.from_rows(hdr, rows, s)
    # 1 pg/mg tissue x 1.05 mg/uL... = 1.05 pg/mm^3 (1050 pg/mL); ng/g is the same mass ratio
    np.testing.assert_allclose(obs.value, [2 * DENSITY, 2 * DENSITY, 2 * PROTEIN * DENSITY, 2e-3], rtol=1e-12)
    np.testing.assert_allclose(obs.sd, obs.value / 2, rtol=1e-12)
    assert DENSITY == 1.05 and "Bassingthwaighte" in obs.conversions["tissue_density"]["source"]
    assert obs.conversions["protein_per_tissue"]["value"] == pytest.approx(PROTEIN * 1e3)
    assert not obs.per_volume.any()   # concentrations: the free factor's mean
    with pytest.raises(DataError, match=r"'pg/mg' is a mass ratio.*'pg/mg tissue'.*'pg/mg protein'"):
        pdata.from_rows(hdr, [(2, ["1", "concentration", "VEGF", "tissue", "2", "1", "pg/mg"])], s)
    with pytest.raises(DataError, match=r"line 2, column value: 'pg/mg tissue' .* quantity 'percent_dose'|"
                                        r"percent_dose of VEGF"):
        pdata.from_rows(hdr, [(2, ["1", "percent_dose", "VEGF", "tissue", "2", "1", "pg/mg tissue"])], s)


def test_file_settings_and_overrides(tmp_path):
    s = sc.loads(CELLS, source="c.toml")
    path = tmp_path / "d.csv"
    path.write_text("# homogenate ELISA\n# tissue_density = 1.10 g/mL\n# protein_per_tissue = 80 mg/g\n"
                    "time [h],quantity,factor,where,value [pg/mg protein],sd [pg/mg protein]\n1,content,VEGF,border,1,0.1\n")
    obs = pdata.read_csv(path, s)
    assert obs.value[0] == pytest.approx(0.080 * 1.10)   # pg/mm^3 per tissue volume
    assert obs.per_volume[0] and "line 2" in obs.conversions["tissue_density"]["source"]
    over = pdata.read_csv(path, s, tissue_density="1.0 g/mL", protein_per_tissue=100)
    assert over.value[0] == pytest.approx(0.100 * 1.0)
    path.write_text("# tissue_density = 3 mm\ntime [h],quantity,factor,where,value [pg/mg tissue],sd [pg/mg tissue]\n"
                    "1,content,VEGF,border,1,0.1\n")
    with pytest.raises(DataError, match=r"line 1: tissue_density = '3 mm'.*allowed: a density"):
        pdata.read_csv(path, s)


def test_content_per_tissue_volume_is_content_over_region_volume(pde):
    """Without binding, content per tissue volume equals the free mean: the same model values."""
    s, b, _ = pde
    hdr = ["time [h]", "quantity", "factor", "where", "value", "sd", "unit"]
    rows = [(2, ["12", "concentration", "VEGF", "border", "1", "1", "pg/mg tissue"]),
            (3, ["12", "content", "VEGF", "border", "1", "1", "pg/mg tissue"]),
            (4, ["12", "content", "VEGF", "tissue", "1", "1", "pg/mg tissue"]),
            (5, ["12", "concentration", "VEGF", "tissue", "1", "1", "pg/mg tissue"]),
            (6, ["12", "content", "VEGF", "border", "1", "1", "pg"])]
    y = calibrate.predict(b, pdata.from_rows(hdr, rows, s))
    vol = np.asarray(b.model.space.region_volumes(), float)
    assert y[1] == pytest.approx(y[0], rel=1e-10) and y[2] == pytest.approx(y[3], rel=1e-10)
    assert y[1] == pytest.approx(y[4] / vol[b.model.regions.index("border")], rel=1e-10)


def test_fit_recovers_secretion_from_pg_per_mg_tissue_via_cli(pde, tmp_path, capsys):
    """Twin experiment: the scenario's own concentrations (pg/mL) converted by hand to pg/mg tissue
    (/ 1050 mg/mL); `paracrine fit` from 2.5x off recovers the secretion, printed per 1e6 cells per day."""
    from paracrine.cli import main

    s, b, pg_per_ml = pde
    (tmp_path / "pde.toml").write_text(PDE)
    data = _csv(tmp_path / "tissue.csv", "pg/mg tissue", pg_per_ml / (DENSITY * 1e3), header=["# twin, 5 % SD"])
    code = main(["fit", str(tmp_path / "pde.toml"), str(data), "--free", "VEGF.secretion",
                 "--initial", "VEGF.secretion=1e-8 pg/cell/s", "--out", str(tmp_path / "fit"), "--no-figures",
                 "--progress", "off"])
    cap = capsys.readouterr()
    assert code == 0, cap.err
    rec = json.loads((tmp_path / "fit" / "fit.json").read_text())
    sec = rec["parameters"]["VEGF.secretion"]
    assert sec["value"] == pytest.approx(2.5e-8, rel=1e-4)
    assert sec["readable"]["unit"] == "pg/1e6 cells/day"
    assert sec["readable"]["value"] == pytest.approx(sec["value"] * 1e6 * 86400, rel=1e-12)
    lo, hi = sec["ci95"]
    assert sec["readable"]["ci95"] == pytest.approx([lo * 8.64e10, hi * 8.64e10], rel=1e-12)
    assert rec["conversions"]["tissue_density"]["value"] == DENSITY and rec["intervals_note"] is None
    assert f"{sec['value'] * 8.64e10:.4g} pg/1e6 cells/day" in cap.out and "tissue density 1.05 g/mL" in cap.out
    assert "iteration   1" in cap.out   # --progress off: plain lines
    fitted = (tmp_path / "fit" / "fitted.toml").read_text()
    assert "pg/1e6 cells/day" in fitted and 'title = "ELISA per mg"   # kept' in fitted
    assert sc.load(tmp_path / "fit" / "fitted.toml").data["cells"]["secretion"]["VEGF"] == pytest.approx(2.5e-8, rel=1e-4)


def test_fit_recovers_secretion_from_pg_per_mg_protein(pde, tmp_path):
    """The same twin in pg/mg protein with the file's own protein content (80 mg/g): / (1050 x 0.080);
    read with 67 mg/g instead, the data are read 67/80 as high and so is the secretion."""
    s, b, pg_per_ml = pde
    values = pg_per_ml / (DENSITY * 1e3 * 0.080)
    data = _csv(tmp_path / "protein.csv", "pg/mg protein", values, header=["# protein_per_tissue = 80 mg/g"])
    res = calibrate.fit(b, pdata.read_csv(data, s), ["VEGF.secretion"], initial={"VEGF.secretion": 1e-8})
    assert res.converged and res.value("VEGF.secretion") == pytest.approx(2.5e-8, rel=1e-4)
    wrong = calibrate.fit(b, pdata.read_csv(data, s, protein_per_tissue="67 mg/g"), ["VEGF.secretion"],
                          initial={"VEGF.secretion": 1e-8})
    assert wrong.value("VEGF.secretion") == pytest.approx(2.5e-8 * 0.067 / 0.080, rel=1e-4)


# ---- identifiability -----------------------------------------------------------------------------------------

def _cells(s, times_h, values):
    hdr = ["time [h]", "quantity", "factor", "where", "value [1e6 cells]", "sd [1e6 cells]"]
    return pdata.from_rows(hdr, [(k + 2, [repr(float(t)), "cells", "", "tissue", repr(float(v)), repr(0.1 * float(v))])
                                 for k, (t, v) in enumerate(zip(times_h, values))], s)


def survival(t_h, washout=0.4, f=0.6, th_fast=48.0, th_slow=30 * 24):
    return 2.0 * (1 - washout) * (f * 0.5 ** (t_h / th_fast) + (1 - f) * 0.5 ** (t_h / th_slow))


@pytest.fixture(scope="module")
def cells():
    s = sc.loads(CELLS, source="cells.toml")
    return s, B.build(s)


def test_dof_zero_warns_and_claims_no_intervals(cells):
    s, b = cells
    t = np.array([24.0, 168.0, 672.0])
    obs = _cells(s, t, survival(t))
    res = calibrate.fit(b, obs, ["cells.washout", "cells.fast_fraction", "cells.half_life_fast"])
    assert res.dof == 0 and res.intervals_note is not None and "dof 0 <= 0" in res.warnings[0]
    assert np.all(np.isnan(res.intervals))
    d = res.to_dict()
    assert all(p["ci95"] is None and p["sd_log"] is None for p in d["parameters"].values())
    assert d["correlation"]["matrix"] is None and "no confidence intervals" in d["intervals_note"]
    # one more datum: dof 1, intervals claimed
    t4 = np.array([24.0, 72.0, 168.0, 672.0])
    ok = calibrate.fit(b, _cells(s, t4, survival(t4)), ["cells.washout", "cells.fast_fraction", "cells.half_life_fast"])
    assert ok.dof == 1 and ok.intervals_note is None and np.all(np.isfinite(ok.intervals))


def test_rank_deficient_jacobian_claims_no_intervals(cells):
    """cells.retention and cells.washout set one leaf: the data determine one combination only."""
    s, b = cells
    t = np.array([1.0, 24.0, 168.0, 672.0])
    res = calibrate.fit(b, _cells(s, t, survival(t)), ["cells.retention", "cells.washout"])
    assert res.dof == 2 and res.rank == 1
    assert "rank 1 < 2" in res.intervals_note and np.all(np.isnan(res.intervals))
    assert res.to_dict()["parameters"]["cells.washout"]["ci95"] is None


# ---- LM stops on a flat loss ---------------------------------------------------------------------------------

def test_lm_stops_on_a_flat_loss_with_ftol_status():
    """A loss with a non-zero minimum; gradient and step tests switched off: only the relative
    decrease below ftol can stop it, in a few iterations, as a status (no exception)."""
    def residual(z):
        return jnp.stack([z[0] - 2.0, 0.1 * (z[0] - 2.0) ** 2 + 1.0, 0.5 * (z[1] + 1.0) ** 3 + 0.3])

    lo, hi = jnp.full(2, -10.0), jnp.full(2, 10.0)
    out = levenberg_marquardt(residual, jnp.array([5.0, 3.0]), lo, hi, max_iter=200, gtol=0.0, xtol=0.0, ftol=1e-10)
    assert int(out["status"]) == FTOL and STATUS[FTOL].startswith("converged (relative loss change")
    assert int(out["iterations"]) < 60
    hist = np.asarray(out["history"])[: int(out["iterations"]) + 1]
    assert (hist[-2] - hist[-1]) <= 1e-10 * hist[-2]   # the last iteration's relative decrease is below ftol
    looser = levenberg_marquardt(residual, jnp.array([5.0, 3.0]), lo, hi, max_iter=200, gtol=0.0, xtol=0.0, ftol=1e-4)
    assert int(looser["status"]) == FTOL and int(looser["iterations"]) < int(out["iterations"])


# ---- readable units ------------------------------------------------------------------------------------------

def test_readable_secretion_per_million_cells_per_day_and_half_lives():
    r = fitreport.readable("pg/cell/s", 2.5e-8, 2e-8, 3e-8)
    assert r["unit"] == "pg/1e6 cells/day" and r["value"] == pytest.approx(2160.0, rel=1e-14)
    assert r["ci95"] == pytest.approx([1728.0, 2592.0], rel=1e-14)
    h = fitreport.readable("1/s", 1e-3, 5e-4, 2e-3)   # a rate: its half-life; the interval runs the other way
    assert h["as"] == "half_life" and h["value"] == pytest.approx(math.log(2) / 1e-3 / 3600, rel=1e-14)
    assert h["ci95"] == pytest.approx([math.log(2) / 2e-3 / 3600, math.log(2) / 5e-4 / 3600], rel=1e-14)
    assert fitreport.readable("s", 7200.0)["value"] == 2.0 and fitreport.readable("1", 0.3) is None
    assert fitreport.describe("VEGF.decay", "1/s", 1e-3) == "t1/2 0.1925 h"


# ---- fitted.toml keeps the user's document -------------------------------------------------------------------

def test_fitted_toml_keeps_comments_and_key_order(cells):
    s, b = cells
    t = np.array([1.0, 24.0, 168.0, 672.0])
    res = calibrate.fit(b, _cells(s, t, survival(t)), ["cells.washout", "cells.fast_fraction", "cells.half_life_fast"])
    text = fitreport.fitted_scenario_text(res, s)
    body = text[text.index("# cells only"):]
    assert body.splitlines()[0] == "# cells only: the survival model's closed form"
    keys = [line.split("=")[0].strip() for line in body.splitlines() if "=" in line and not line.startswith("#")]
    original = [line.split("=")[0].strip() for line in CELLS.splitlines() if "=" in line and not line.startswith("#")]
    assert keys == original   # same keys, same order
    line = next(x for x in body.splitlines() if x.startswith("retention"))
    assert line.endswith("# fitted by paracrine fit (was 0.5); before: start of the fit: washout 0.5")
    assert 'slow_half_life = "30 d"' in body   # untouched values as written
    again = sc.loads(text, source="fitted.toml")
    assert again.data["injections"][0]["retention"] == pytest.approx(1 - res.value("cells.washout"), rel=1e-8)
    assert again.data["cells"]["fast_half_life"] == pytest.approx(res.value("cells.half_life_fast"), rel=1e-8)
    assert "cells.half_life_fast" in text.splitlines()[1] + text.splitlines()[2] + text.splitlines()[3]


# ---- progress ------------------------------------------------------------------------------------------------

def test_progress_bar_on_stderr_with_loss(cells, tmp_path, capsys):
    from paracrine.cli import main

    s, _ = cells
    t = np.array([1.0, 24.0, 168.0, 672.0])
    (tmp_path / "c.toml").write_text(CELLS)
    lines = ["time [h],quantity,factor,where,value [1e6 cells],sd [1e6 cells]"]
    lines += [f"{a},cells,,tissue,{float(v)!r},{0.1 * float(v)!r}" for a, v in zip(t, survival(t))]
    (tmp_path / "c.csv").write_text("\n".join(lines) + "\n")
    args = ["fit", str(tmp_path / "c.toml"), str(tmp_path / "c.csv"), "--free", "cells.washout",
            "cells.half_life_fast", "--no-figures"]
    assert main(args + ["--out", str(tmp_path / "on"), "--progress", "on"]) == 0
    cap = capsys.readouterr()
    assert "fit (lm)" in cap.err and "iterations" in cap.err and "loss " in cap.err
    assert "iteration   1" not in cap.out   # the bar replaces the lines
    rec = json.loads((tmp_path / "on" / "fit.json").read_text())
    hl = rec["parameters"]["cells.half_life_fast"]
    assert hl["readable"]["value"] == pytest.approx(hl["value"] / 3600, rel=1e-12)
    assert main(args + ["--out", str(tmp_path / "off"), "--progress", "off"]) == 0
    cap = capsys.readouterr()
    assert "fit (lm)" not in cap.err and "iteration   1" in cap.out


def test_progress_function_does_not_retrace(cells):
    import importlib

    fitmod = importlib.import_module("paracrine.fitting.fit")
    s, b = cells
    t = np.array([1.0, 24.0, 168.0, 672.0])
    obs = _cells(s, t, survival(t))
    seen = []
    calibrate.fit(b, obs, ["cells.washout"], progress=lambda *a: seen.append(a))
    n = fitmod.traces()
    seen2 = []
    calibrate.fit(b, obs, ["cells.washout"], progress=lambda *a: seen2.append(a))
    calibrate.fit(b, obs, ["cells.washout"])
    assert fitmod.traces() == n and len(seen) >= 1 and len(seen2) == len(seen)
    assert [int(a[0]) for a in seen] == list(range(1, len(seen) + 1))


def test_scenario_data_table_sets_the_conversions_below_the_file(tmp_path):
    s = sc.loads(CELLS + '\n[data]\ntissue_density = "1.2 g/mL"\nprotein_per_tissue = "50 mg/g"\n', source="c.toml")
    path = tmp_path / "d.csv"
    path.write_text("time [h],quantity,factor,where,value [pg/mg protein],sd [pg/mg protein]\n1,content,VEGF,border,1,0.1\n")
    assert pdata.read_csv(path, s).value[0] == pytest.approx(0.050 * 1.2)
    assert "c.toml: data.tissue_density" in pdata.read_csv(path, s).conversions["tissue_density"]["source"]
    path.write_text("# protein_per_tissue = 90 mg/g\n" + path.read_text())
    assert pdata.read_csv(path, s).value[0] == pytest.approx(0.090 * 1.2)   # the file's own value wins
    with pytest.raises(sc.ScenarioError, match=r"data.protein_per_tissue"):
        sc.loads(CELLS + '\n[data]\nprotein_per_tissue = "2 g/g"\n', source="c.toml")
