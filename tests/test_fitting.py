"""Calibration: twin experiments, gradients, optimisers, uncertainty, identifiability, bad data."""

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from paracrine import solver
from paracrine import build as B, calibrate, data as pdata, scenario as sc
from paracrine.data import DataError

CELLS = """
[geometry]
species = "rat"
mesh_size = "1 mm"
[time]
end = "28 d"
[factors.VEGF]
preset = "VEGF165"
[cells]
secretion = { VEGF = "1e-8 pg/cell/s" }
fast_fraction = 0.5
fast_half_life = "3 d"
slow_half_life = "30 d"
[[injection]]
dose = "2e6 cells"
sites = 1
retention = 0.5
"""

PDE = """
[geometry]
species = "rat"
mesh_size = "0.8 mm"
border_width = "0.5 mm"
[time]
end = "2 d"
dt = "600 s"
[factors.VEGF]
preset = "VEGF165"
uptake = { border = "1e-3 1/s" }
[cells]
secretion = { VEGF = "2.5e-8 pg/cell/s" }
[[injection]]
dose = "1e6 cells"
sites = 3
[probes]
near = ["2.0 mm", 0, "-7.0 mm"]
"""

HEADER = ["time [h]", "quantity", "factor", "where", "value [pg]", "sd [pg]"]


@pytest.fixture(scope="module")
def cells_case():
    s = sc.loads(CELLS, source="cells.toml")
    return s, B.build(s)


@pytest.fixture(scope="module")
def pde_case():
    s = sc.loads(PDE, source="pde.toml")
    b = B.build(s)
    times = [6, 24, 48]
    where = [(t, w) for t in times for w in ("border", "tissue")]
    probe = pdata.from_rows(HEADER, [(2 + k, [str(t), "content", "VEGF", w, "1", "1"]) for k, (t, w) in enumerate(where)], s)
    truth = calibrate.predict(b, probe)
    rows = [[str(t), "content", "VEGF", w, repr(float(v)), repr(float(0.05 * v))] for (t, w), v in zip(where, truth)]
    return s, b, pdata.from_rows(HEADER, list(enumerate(rows, 2)), s), truth


def cell_obs(s, times_h, values, sd):
    hdr = ["time [h]", "quantity", "factor", "where", "value [1e6 cells]", "sd [1e6 cells]"]
    rows = [(k + 2, [repr(float(t)), "cells", "", "tissue", repr(float(v)), repr(float(e))])
            for k, (t, v, e) in enumerate(zip(times_h, values, sd))]
    return pdata.from_rows(hdr, rows, s)


def survival(t_h, washout, f, th_fast, th_slow=30 * 24):
    return 2.0 * (1 - washout) * (f * 0.5 ** (t_h / th_fast) + (1 - f) * 0.5 ** (t_h / th_slow))


def test_twin_pde_noise_free_recovers_truth_within_1_percent(pde_case):
    """Secretion and border-zone uptake through the full PDE on a small LV mesh, from 2.5x and 3x off."""
    s, b, obs, _ = pde_case
    res = calibrate.fit(b, obs, ["VEGF.secretion", "VEGF.uptake.border"],
                      initial={"VEGF.secretion": 1e-8, "VEGF.uptake.border": 3e-3})
    assert res.converged, res.status
    np.testing.assert_allclose(res.values, [2.5e-8, 1e-3], rtol=1e-2)
    assert res.loss < 1e-8 and res.n_solves < 40
    # the Laplace interval brackets the truth and the correlation is reported
    assert np.all(res.intervals[:, 0] < res.values) and np.all(res.values < res.intervals[:, 1])
    assert res.correlation.shape == (2, 2) and abs(res.correlation[0, 1]) <= 1 + 1e-9


def test_intervals_cover_the_truth_for_most_noise_seeds(cells_case):
    s, b = cells_case
    t = np.array([1, 6, 24, 72, 168, 336, 504, 672.0])
    truth = dict(washout=0.5, f=0.5, th=72.0)
    clean = survival(t, truth["washout"], truth["f"], truth["th"])
    covered = 0
    for seed in range(8):
        noisy = clean * (1 + 0.1 * np.random.default_rng(seed).standard_normal(len(t)))
        obs = cell_obs(s, t, noisy, 0.1 * clean)
        res = calibrate.fit(b, obs, ["cells.washout", "cells.fast_fraction", "cells.half_life_fast"])
        assert res.converged, res.status
        want = [truth["washout"], truth["f"], truth["th"] * 3600]
        covered += all(lo <= w <= hi for (lo, hi), w in zip(res.intervals, want))
    assert covered >= 6, covered  # 95 % intervals (all three at once): most seeds


@pytest.mark.slow   # fast path: tests/test_layers_and_problem.py checks the generic Problem's gradient
def test_loss_gradient_matches_central_differences(pde_case):
    s, b, obs, _ = pde_case
    free = calibrate.resolve(b, ["VEGF.secretion", "VEGF.uptake.border", "VEGF.decay"])
    prob = calibrate.problem(b, obs, free)
    z = jnp.asarray(prob.z0) + jnp.array([0.3, -0.2, 0.1])
    g = np.asarray(jax.grad(prob.loss)(z))
    eps = 1e-5
    fd = [(float(prob.loss(z.at[k].add(eps))) - float(prob.loss(z.at[k].add(-eps)))) / (2 * eps) for k in range(3)]
    np.testing.assert_allclose(g, fd, rtol=1e-5)
    # forward mode (what LM uses) equals reverse mode
    Jf = np.asarray(jax.jacfwd(prob.residual)(z))
    Jr = np.asarray(jax.jacrev(prob.residual)(z))
    np.testing.assert_allclose(Jf, Jr, rtol=1e-9, atol=1e-12)


def test_lm_needs_fewer_solves_than_finite_difference_least_squares(pde_case):
    from scipy.optimize import least_squares

    s, b, obs, _ = pde_case
    free = ["VEGF.secretion", "VEGF.uptake.border"]
    init = {"VEGF.secretion": 1e-8, "VEGF.uptake.border": 3e-3}
    res = calibrate.fit(b, obs, free, initial=init)
    prob = calibrate.problem(b, obs, calibrate.resolve(b, free), initial=init)
    resid = eqx.filter_jit(prob.residual)
    calls = []

    def counted(z):
        calls.append(1)
        return np.asarray(resid(jnp.asarray(z)))

    for method in ("lm", "trf"):
        calls.clear()
        ref = least_squares(counted, np.asarray(prob.z0), jac="2-point", method=method)
        assert np.allclose(np.exp(ref.x), res.values, rtol=1e-3)
        # passes through the model: ours (residual trials + forward-mode Jacobian passes) against every
        # evaluation the baseline makes, finite differences included; a Jacobian pass carries 2 tangents,
        # what that costs in time is measured in benchmarks/fit.py
        assert res.n_solves < len(calls), (method, res.n_solves, len(calls))


@pytest.mark.slow   # an option off by default; the default LM path is tested above
def test_broyden_updates_reach_the_same_optimum(pde_case):
    from paracrine.fitting.optimize import levenberg_marquardt

    s, b, obs, _ = pde_case
    prob = calibrate.problem(b, obs, calibrate.resolve(b, ["VEGF.secretion", "VEGF.uptake.border"]),
                           initial={"VEGF.secretion": 1e-10, "VEGF.uptake.border": 3e-2})
    args = (jnp.asarray(prob.z0), jnp.asarray(prob.lo), jnp.asarray(prob.hi))
    exact = jax.jit(lambda z, lo, hi: levenberg_marquardt(prob.residual, z, lo, hi))(*args)
    broyden = jax.jit(lambda z, lo, hi: levenberg_marquardt(prob.residual, z, lo, hi, refresh=4))(*args)
    np.testing.assert_allclose(np.exp(broyden["z"]), np.exp(exact["z"]), rtol=1e-6)
    assert int(broyden["n_jacobian"]) < int(exact["n_jacobian"])


def test_multistart_vmap_equals_separate_fits(cells_case):
    s, b = cells_case
    t = np.array([1, 24, 168, 672.0])
    obs = cell_obs(s, t, survival(t, 0.5, 0.5, 72.0), 0.1 * survival(t, 0.5, 0.5, 72.0))
    free = ["cells.washout", "cells.half_life_fast"]
    many = calibrate.fit(b, obs, free, starts=3, seed=3)
    prob = calibrate.problem(b, obs, calibrate.resolve(b, free))
    rng = np.random.default_rng(3)
    z0 = np.tile(prob.z0, (3, 1))
    z0[1:] += rng.uniform(-math.log(10), math.log(10), size=(2, 2))
    from paracrine.fitting.optimize import levenberg_marquardt

    for k in range(3):
        one = levenberg_marquardt(prob.residual, jnp.asarray(np.clip(z0[k], prob.lo, prob.hi)), jnp.asarray(prob.lo),
                                  jnp.asarray(prob.hi), max_iter=50)
        assert float(one["loss"]) == pytest.approx(many.starts[k][0], rel=1e-8, abs=1e-20)


@pytest.mark.parametrize("method", ["lbfgs", "adam"])
def test_optax_methods_reach_the_lm_optimum(cells_case, method):
    s, b = cells_case
    t = np.array([1, 24, 168, 672.0])
    y = survival(t, 0.5, 0.5, 72.0)
    obs = cell_obs(s, t, y, 0.1 * y)
    free = ["cells.washout", "cells.half_life_fast"]
    lm = calibrate.fit(b, obs, free)
    res = calibrate.fit(b, obs, free, method=method, max_iter=400 if method == "lbfgs" else 3000)
    np.testing.assert_allclose(res.values, lm.values, rtol=2e-2 if method == "adam" else 1e-4)


def test_secretion_and_uptake_from_one_steady_state_are_flagged(pde_case):
    """One time point late in a nearly steady state: the amount fixes secretion / uptake, not both."""
    s, b, _, _ = pde_case
    hdr = ["time [h]", "quantity", "factor", "where", "value [pg]", "sd [pg]"]
    obs = pdata.from_rows(hdr, [(2, ["1", "content", "VEGF", "border", "0.5", "0.05"])], s)
    res = calibrate.fit(b, obs, ["VEGF.secretion", "VEGF.uptake.border"])
    assert any("not identifiable" in w and "VEGF.secretion" in w and "VEGF.uptake.border" in w for w in res.warnings)


def test_profile_likelihood_agrees_with_laplace_for_a_nearly_linear_problem(cells_case):
    s, b = cells_case
    t = np.array([1, 6, 24, 72, 168, 336, 504, 672.0])
    y = survival(t, 0.5, 0.5, 72.0)
    obs = cell_obs(s, t, y, 0.02 * y)
    res = calibrate.fit(b, obs, ["cells.washout", "cells.half_life_fast"], profile=["cells.half_life_fast"],
                      profile_points=21)
    prof = res.profiles["cells.half_life_fast"]
    lo, hi = prof["ci95"]
    laplace = res.intervals[1]
    assert not prof["open"].any()
    np.testing.assert_allclose([lo, hi], laplace, rtol=0.1)  # profile grid spacing limits the agreement


def test_fit_with_probe_and_concentration_data(pde_case):
    s, b, _, _ = pde_case
    hdr = ["time [h]", "quantity", "factor", "where", "value [pg/mL]", "cv"]
    rows = [(2, ["6", "concentration", "VEGF", "near", "1", "0.1"]), (3, ["24", "concentration", "VEGF", "border", "1", "0.1"])]
    obs = pdata.from_rows(hdr, rows, s)
    y = calibrate.predict(b, obs)
    # against the full field at 6 h and 24 h, interpolated and averaged by hand


    sol = solver.simulate(b.model, b.params, t_end=24 * 3600.0, dt=600.0, save_at=[6 * 3600.0, 24 * 3600.0],
                          method=solver.plan(b.model, b.params, dt=600.0, method=s.data["time"]["method"]))
    nodes, w = b.disc.locate(np.array([[2.0, 0.0, -7.0]]))
    c6, c24 = np.asarray(sol.ys[0, 0]), np.asarray(sol.ys[1, 0])
    border = b.disc.mass_region[:, b.model.regions.index("border")]
    np.testing.assert_allclose(y, [c6[nodes[0]] @ w[0], border @ c24 / border.sum()], rtol=1e-10)
    assert obs.sd == pytest.approx(0.1 * obs.value)  # cv column


# ---- bad data: one test each -------------------------------------------------------------------------------

BAD = {
    "nan value": (["6", "content", "VEGF", "border", "nan", "1"], r"line 2, column value: 'nan'; allowed: a finite number"),
    "negative value": (["6", "content", "VEGF", "border", "-1", "1"], r"line 2, column value: -1; allowed: >= 0"),
    "zero sd": (["6", "content", "VEGF", "border", "1", "0"], r"line 2, column sd: 0; allowed: > 0"),
    "unknown region": (["6", "content", "VEGF", "boarder", "1", "1"], r"column where: 'boarder'; did you mean 'border'\?"),
    "unknown factor": (["6", "content", "HGF", "border", "1", "1"], r"column factor: 'HGF'.* allowed: \['VEGF'\]"),
    "unknown probe": (["6", "concentration", "VEGF", "far", "1", "1"], r"column where: 'far'.* allowed for concentration: .*'near'"),
    "unknown quantity": (["6", "contents", "VEGF", "border", "1", "1"], r"column quantity: 'contents'; did you mean 'content'\?"),
    "time past end": (["49", "content", "VEGF", "border", "1", "1"], r"column time: 49 h is outside the scenario's run \(0, 48 h\]"),
    "not a number": (["six", "content", "VEGF", "border", "1", "1"], r"column time: 'six' is not a number"),
    "percent dose without medium": (["6", "percent_dose", "VEGF", "tissue", "1", "1"], r"percent_dose of VEGF: the scenario injects no conditioned medium"),
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_data_row(pde_case, name):
    s = pde_case[0]
    row, pattern = BAD[name]
    with pytest.raises(DataError, match=pattern):
        pdata.from_rows(HEADER, [(2, row)], s, source="d.csv")


def test_bad_units_and_header(pde_case, tmp_path):
    s = pde_case[0]
    with pytest.raises(DataError, match=r"line 2, column value unit = '1 h' has dimension \[time\]; allowed: an amount"):
        pdata.from_rows(["time [h]", "quantity", "factor", "where", "value [h]", "sd [pg]"],
                          [(2, ["6", "content", "VEGF", "border", "1", "1"])], s, source="d.csv")
    with pytest.raises(DataError, match=r"the time column needs a unit in the header"):
        pdata.from_rows(["time", "quantity", "factor", "where", "value [pg]", "sd [pg]"], [], s, source="d.csv")
    with pytest.raises(DataError, match=r"give exactly one of the columns sd or cv"):
        pdata.from_rows(["time [h]", "quantity", "factor", "where", "value [pg]"], [], s, source="d.csv")
    with pytest.raises(DataError, match=r"unknown column; did you mean 'value'\?"):
        pdata.from_rows(["time [h]", "quantity", "factor", "where", "valu [pg]", "sd [pg]"], [], s, source="d.csv")
    p = tmp_path / "d.csv"
    p.write_text("# a comment\ntime [h],quantity,factor,where,value,sd,unit\n6,content,VEGF,border,2,0.5,ng\n")
    obs = pdata.read_csv(p, s)
    assert obs.value[0] == pytest.approx(2000.0) and obs.sd[0] == pytest.approx(500.0) and obs.lines == [3]
    with pytest.raises(DataError, match="no such data file"):
        pdata.read_csv(tmp_path / "none.csv", s)


def test_bad_fit_arguments(cells_case):
    s, b = cells_case
    obs = cell_obs(s, [1.0], [1.0], [0.1])
    with pytest.raises(ValueError, match=r"unknown free parameter 'cells.washot'; did you mean 'cells.washout'\?"):
        calibrate.fit(b, obs, ["cells.washot"])
    with pytest.raises(ValueError, match=r"free parameter VEGF.uptake.border starts at 0.0; allowed: > 0"):
        calibrate.fit(b, obs, ["VEGF.uptake.border"])
    with pytest.raises(ValueError, match=r"method 'newton'; allowed"):
        calibrate.fit(b, obs, ["cells.washout"], method="newton")
    with pytest.raises(ValueError, match=r"loss 'huber'; allowed"):
        calibrate.fit(b, obs, ["cells.washout"], loss="huber")
    with pytest.raises(ValueError, match=r"prior for 'cells.fast_fraction', which is not free"):
        calibrate.fit(b, obs, ["cells.washout"], priors={"cells.fast_fraction": (0.5, 1.0)})


def test_paracrine_fit_writes_a_loadable_fitted_scenario(pde_case, tmp_path, capsys):
    from paracrine.cli import main

    s, b, obs, truth = pde_case
    (tmp_path / "pde.toml").write_text(PDE)
    lines = ["# synthetic: the scenario's own prediction with 5 % SD", ",".join(HEADER)]
    for t, w, v in zip(obs.time / 3600, obs.where, truth):
        lines.append(f"{t:g},content,VEGF,{w},{float(v)!r},{0.05 * float(v)!r}")
    (tmp_path / "data.csv").write_text("\n".join(lines) + "\n")
    code = main(["fit", str(tmp_path / "pde.toml"), str(tmp_path / "data.csv"), "--free", "VEGF.secretion",
                 "VEGF.uptake.border", "--initial", "VEGF.secretion=1e-8 pg/cell/s", "VEGF.uptake.border=0.2 1/min",
                 "--out", str(tmp_path / "fit")])
    cap = capsys.readouterr()
    out = cap.out
    assert code == 0, cap.err
    assert "iteration   1" in out and "converged" in out
    for name in ("fitted.toml", "fit.json", "fit.png", "convergence.png"):
        assert (tmp_path / "fit" / name).is_file()
    fitted = sc.load(tmp_path / "fit" / "fitted.toml")
    assert fitted.data["cells"]["secretion"]["VEGF"] == pytest.approx(2.5e-8, rel=1e-3)
    assert fitted.data["factors"]["VEGF"]["uptake"]["border"] == pytest.approx(1e-3, rel=1e-3)
    import json

    rec = json.loads((tmp_path / "fit" / "fit.json").read_text())
    assert rec["parameters"]["VEGF.secretion"]["unit"] == "pg/cell/s" and len(rec["data"]) == 6
    # errors are named, nothing is written
    code = main(["fit", str(tmp_path / "pde.toml"), str(tmp_path / "data.csv"), "--free", "VEGF.secretoin",
                 "--out", str(tmp_path / "bad")])
    assert code == 2 and "did you mean 'VEGF.secretion'" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_lm_rejects_steps_to_non_finite_losses():
    """The optimum of the smooth part lies where the model fails (NaN): LM must stay in the finite region."""
    from paracrine.fitting.optimize import levenberg_marquardt

    def residual(z):
        r = jnp.stack([z[0] - 3.0, 0.1 * (z[1] - 1.0)])
        return jnp.where(z[0] > 1.5, jnp.nan, r)

    out = jax.jit(lambda z: levenberg_marquardt(residual, z, jnp.full(2, -10.0), jnp.full(2, 10.0)))(jnp.zeros(2))
    assert np.isfinite(float(out["loss"])) and float(out["z"][0]) <= 1.5
    assert float(out["loss"]) < 0.5 * 9.0  # it moved towards the optimum as far as the finite region allows
    assert np.all(np.isfinite(np.asarray(out["history"][: int(out["iterations"]) + 1])))


def test_real_data_examples_reproduce_the_documented_numbers(tmp_path, capsys):
    """examples/README.md: Yasuda 2005 (normal hearts) and Laham 1999 (intracoronary) fits."""
    import json
    from pathlib import Path

    from paracrine.cli import main

    ex = Path(__file__).resolve().parents[1] / "examples"
    assert main(["fit", str(ex / "fit_yasuda.toml"), str(ex / "data" / "yasuda2005_normal.csv"), "--free",
                 "cells.washout", "cells.fast_fraction", "cells.half_life_fast", "--out", str(tmp_path / "y"),
                 "--no-figures"]) == 0
    p = json.loads((tmp_path / "y" / "fit.json").read_text())["parameters"]
    assert p["cells.washout"]["value"] == pytest.approx(0.496, abs=2e-3)
    assert p["cells.half_life_fast"]["value"] / 3600 == pytest.approx(47.1, rel=1e-2)
    assert main(["fit", str(ex / "fit_laham.toml"), str(ex / "data" / "laham1999_ic.csv"), "--free", "medium.retention",
                 "FGF2.decay", "--loss", "lognormal", "--out", str(tmp_path / "l"), "--no-figures"]) == 0
    p = json.loads((tmp_path / "l" / "fit.json").read_text())["parameters"]
    assert p["medium.retention"]["value"] == pytest.approx(0.00987, rel=1e-2)
    assert math.log(2) / p["FGF2.decay"]["value"] / 3600 == pytest.approx(5.56, rel=1e-2)
    # a prior centred on the scenario's (preset) value pulls the rate towards it
    assert main(["fit", str(ex / "fit_laham.toml"), str(ex / "data" / "laham1999_ic.csv"), "--free", "medium.retention",
                 "FGF2.decay", "--loss", "lognormal", "--prior", "FGF2.decay=scenario,0.5", "--out",
                 str(tmp_path / "p"), "--no-figures"]) == 0
    q = json.loads((tmp_path / "p" / "fit.json").read_text())["parameters"]
    preset = math.log(2) / (7.6 * 3600)
    assert abs(math.log(q["FGF2.decay"]["value"] / preset)) < abs(math.log(p["FGF2.decay"]["value"] / preset))


def test_paracrine_fits_of_one_scenario_compile_once(cells_case):
    """Same scenario, same rows and free names: new data values and starts reuse the compiled fit."""
    from paracrine import fitting

    s, b = cells_case
    t = np.array([1, 24, 168, 672.0])
    y = survival(t, 0.5, 0.5, 72.0)
    free = ["cells.washout", "cells.half_life_fast"]
    calibrate.fit(b, cell_obs(s, t, y, 0.1 * y), free)
    n = fitting.traces()
    again = calibrate.fit(b, cell_obs(s, t, 0.8 * y, 0.1 * y), free, initial={"cells.washout": 0.3})
    assert fitting.traces() == n and again.compile_s == 0.0
    assert again.converged and again.value("cells.washout") == pytest.approx(0.6, rel=1e-6)
