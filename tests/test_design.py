"""Therapy design: a closed-form optimum, a brute-force grid, gradients, constraints, the CLI."""

import json
import math
import tomllib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from paracrine import fitting
from paracrine import geometry
from paracrine import solver
from paracrine.fitting import design as fd
from paracrine import calibrate, cli, design as pd, scenario as sc
from paracrine.build import build

HOUR, DAY = 3600.0, 86400.0


def compartment(k_half=5 * HOUR, survival_half=DAY):
    """A well-mixed compartment (uniform source, no gradients): c' = -k c + q n(t) / V."""
    disc = geometry.discretise(geometry.box_grid([0, 0], [1, 1], 2))
    model = solver.Model(disc, sources=[solver.field_source(disc, np.ones(disc.spatial_shape), name="cells")])
    k, kap = math.log(2) / k_half, math.log(2) / survival_half
    prof = solver.CellSecretion(dose=[3e5], time=[10 * HOUR], retention=[0.2], secretion=[1e-6], fast_fraction=0.0,
                                k_fast=1.0, k_slow=kap)
    return model, model.params(D=1e-3, decay=k, sources=[prof]), k, kap


def test_closed_form_optimum_of_a_compartment_is_recovered():
    """Maximise c(T) over the injection time t1 and dose N <= budget: c(T) = q N rho (e^{-kap tau} - e^{-k tau})
    / (V (k - kap)), tau = T - t1, is largest at tau* = ln(k / kap) / (k - kap), N = budget (active)."""
    model, params, k, kap = compartment()
    T, budget = 3 * DAY, 1e6
    dose = fitting.parameter("dose", lambda p: p.sources[0].dose, 0, unit="cell")
    t1 = fitting.parameter("time", lambda p: p.sources[0].time, 0, transform="identity", unit="s")
    cons = [fd.Constraint(fd.ControlSum([1.0, 0.0]), upper=budget, name="budget")]
    prob = fitting.DesignProblem(model, params, [dose, t1], fd.Saved(0, (0, 0)), cons,
                                 bounds={"dose": (1e4, 3e6), "time": (0.0, T - 600.0)}, t_end=T, dt=120.0,
                                 save_at=[T], observer=solver.observe.region_means(model))
    res = fitting.optimise(prob, tol=1e-5)
    tau = math.log(k / kap) / (k - kap)
    best = 1e-6 * budget * 0.2 * (math.exp(-kap * tau) - math.exp(-k * tau)) / (k - kap)   # V = 1 mm^2
    assert res.converged and res.feasible
    assert res.theta[1] == pytest.approx(T - tau, rel=1e-3)
    assert res.theta[0] == pytest.approx(budget, rel=1e-3) and res.theta[0] <= budget
    assert res.objective == pytest.approx(best, rel=1e-3)
    assert res.constraints[0]["active"] and res.at_bound == ["", ""]
    assert abs(res.sensitivity[1]) * HOUR < 1e-3 * best      # stationary in the time
    # dJ/dN = J / N at the optimum (c is linear in the dose)
    assert res.sensitivity[0] == pytest.approx(res.objective / res.theta[0], rel=1e-6)
    # the same structure with other numbers (bounds, start) reuses the compiled program
    from paracrine.solver.simulate import TRACE_COUNT

    n0 = sum(TRACE_COUNT.values())
    prob2 = fitting.DesignProblem(model, params, [dose, t1], fd.Saved(0, (0, 0)),
                                  [fd.Constraint(fd.ControlSum([1.0, 0.0]), upper=budget, name="budget")],
                                  bounds={"dose": (1e4, 2e6), "time": (0.0, T - 600.0)}, t_end=T, dt=120.0,
                                  save_at=[T], observer=solver.observe.region_means(model), initial={"time": 5 * HOUR})
    res2 = fitting.optimise(prob2, tol=1e-5, u0=[0.9, 0.05])          # another start (of a multi-start)
    assert res2.theta[1] == pytest.approx(T - tau, rel=1e-3) and res2.theta[0] <= budget
    assert sum(TRACE_COUNT.values()) == n0


def test_objective_gradients_match_central_differences():
    model, params, k, kap = compartment()
    thr = 0.05
    dose = fitting.parameter("dose", lambda p: p.sources[0].dose, 0, unit="cell")
    t1 = fitting.parameter("time", lambda p: p.sources[0].time, 0, transform="identity", unit="s")
    metrics = solver.SmoothExposure.of(model, [thr], width=0.2)
    ex = solver.Exposure.of(model, [thr])
    q = fd.Total((fd.Accumulated("above_mean", 0, 0), fd.ExposedShare(ex.weights, 0, 0, 6 * HOUR, 0.2),
                  fd.Accumulated("auc", 0, 0), fd.Accumulated("peak_max", 0, 0)), (1 / HOUR, 1.0, 1e-4, 1.0))
    cons = [fd.Constraint(fd.Accumulated("peak_max", 0, 0), upper=1.0, name="peak")]
    prob = fitting.DesignProblem(model, params, [dose, t1], q, cons, bounds={"dose": (1e4, 3e6), "time": (0, DAY)},
                                 t_end=2 * DAY, dt=600.0, metrics=metrics)
    f = jax.jit(lambda u: prob.evaluate(u)[0])
    u = jnp.asarray([0.55, 0.37])
    g = np.asarray(jax.grad(f)(u))
    for i in range(2):
        e = np.zeros(2)
        e[i] = 1e-5
        fd_i = (float(f(u + e)) - float(f(u - e))) / 2e-5
        assert g[i] == pytest.approx(fd_i, rel=1e-5, abs=1e-9 * abs(float(f(u))))


SMALL = """
[geometry]
species = "rat"
mesh_size = "1 mm"
border_width = "0.5 mm"
[time]
end = "1 d"
dt = "600 s"
method = "trbdf2"
[output]
interval = "1 h"
[factors.VEGF]
preset = "VEGF165"
uptake = { border = "1e-3 1/s" }
threshold = "31 pg/mL"
[cells]
secretion = { VEGF = "2.5e-8 pg/cell/s" }
[[injection]]
dose = "2e5 cells"
time = "14 h"
sites = 3
"""


@pytest.fixture(scope="module")
def small():
    return build(sc.loads(SMALL, source="small.toml"))


@pytest.mark.slow   # fast path: the design benchmark's quick mode (design against a grid sweep) and the closed-form optimum test
def test_optimum_matches_and_beats_a_grid_sweep(small):
    """Two controls (injection time, dose under a budget) for the border-zone mean at day 1: the design's
    optimum lies within one grid step of the best point of a `paracrine sweep` grid and beats every point."""
    times = np.linspace(12 * HOUR, 23.5 * HOUR, 12)
    doses = np.array([6e5, 8e5])
    grid = calibrate.sweep(small, {"injection[0].time": times, "injection[0].dose": doses})
    day1 = int(np.argmin(np.abs(grid["ts"] - DAY)))
    r = small.model.regions.index("border")
    vals = np.asarray(grid["means"])[:, day1, 0, r] * 1e3          # pg/mL
    spec = pd.Spec(objectives=["trough:VEGF:1d"], controls={"injection[0].time": (12 * HOUR, 23.5 * HOUR),
                                                             "injection[0].dose": (1e5, 2e6)},
                   budget=8e5, dt=600.0, tol=1e-5)
    one = pd.design_one(small, spec)
    res = one["result"]
    best = int(np.argmax(vals))
    step = times[1] - times[0]
    assert res.converged and res.constraints[0]["active"]
    assert res.theta[1] == pytest.approx(8e5, rel=1e-3) and res.theta[1] <= 8e5
    assert abs(res.theta[0] - grid["values"][best][0]) <= step
    exact = one["exact_optimum"]["objectives"][0]["value"]
    assert exact >= vals.max() * (1 - 1e-9)
    assert res.objective * 1e3 == pytest.approx(exact, rel=1e-6)    # fixed steps of the scenario's dt: same numbers


def test_peak_ceiling_holds_and_is_reported_active(small):
    d = small.scenario.data
    free = calibrate.resolve(small, ["injection[0].dose"])
    ex = pd.exact_run(small, small.params, pd.Spec(objectives=["auc:VEGF"], controls={}), free)
    spec = pd.Spec(objectives=["auc:VEGF"], controls={"injection[0].dose": (1e4, 5e6)}, dt=600.0)
    acc = solver.simulate(small.model, small.params, t_end=d["time"]["end"], dt=600.0, method="trbdf2",
                          metrics=solver.Exposure.of(small.model)).metrics
    ceiling = 2.0 * float(np.max(np.asarray(acc["peak_max"])[0]))   # twice the scenario's (2e5 cells) peak
    spec.peak_ceiling = {"VEGF": ceiling}
    one = pd.design_one(small, spec)
    res = one["result"]
    assert res.feasible
    assert res.theta[0] == pytest.approx(4e5, rel=2e-3)            # the peak is linear in the dose
    active = [c for c in res.constraints if c["active"]]
    assert active and all(c["value"] <= ceiling * (1 + 1e-3) for c in res.constraints)
    assert all(c["met"] for c in one["exact_optimum"]["constraints"])
    assert ex["metrics"]["VEGF.auc_pg_per_mL_h"] > 0


def test_set_key_and_alternatives():
    raw = {"injection": [{"dose": "1e6 cells"}]}
    pd.set_key(raw, "injection[0].repeat.count", 3)
    assert raw["injection"][0]["repeat"] == {"count": 3, "every": "1 d"}
    pd.set_key(raw, "injection[0].repeat.count", 1)
    assert "repeat" not in raw["injection"][0]
    with pytest.raises(sc.ScenarioError, match=r"injection\[2\]"):
        pd.set_key(raw, "injection[2].dose", 1)
    two_days = SMALL.replace('end = "1 d"', 'end = "2 d"')
    alts = pd.alternatives(two_days, "small.toml", {"injection[0].repeat.count": ["1", "2"],
                                                  "injection[0].route": ["intramyocardial", "transendocardial"]})
    assert len(alts) == 4 and all(sc.loads(t, source="a") for _, t, _ in alts)


def run_cli(args, capsys):
    code = cli.main(args)
    cap = capsys.readouterr()
    return code, cap.out, cap.err


@pytest.mark.parametrize("extra,needle", [
    (["--control", "injection[0].dos=1e5,1e6 cells"], "injection[0].dose"),           # suggests the name
    (["--control", "injection[0].dose=1e6,1e5 cells"], "low 1e+06 >= high"),
    (["--control", "injection[0].dose=1e5 cells"], "NAME=LOW,HIGH"),
    (["--control", "injection[0].dose=1e5,1e6 mL"], "injection[0].dose"),
    (["--control", "injection[0].dose=1e5,1e6 cells", "--objective", "hours_abov:VEGF"], "hours_above"),
    (["--control", "injection[0].dose=1e5,1e6 cells", "--objective", "auc:HGF"], "unknown factor 'HGF'"),
    (["--control", "injection[0].dose=1e5,1e6 cells", "--objective", "auc:VEGF@corre"], "unknown region 'corre'"),
    (["--control", "injection[0].time=0 h,10 h", "--budget", "1e5 cells"], "no alternative has a dose control"),
    (["--control", "injection[0].dose=1e5,1e6 cells", "--budget", "5e4 cells"], "infeasible"),
    (["--control", "injection[0].time=0 h,10 h", "--budget", "-3 cells"], "--budget"),
    (["--control", "injection[0].dose=1e5,1e6 cells", "--peak-ceiling", "FGF=1 ng/mL"], "FGF"),
    (["--control", "injection[0].dose=1e5,1e6 cells", "--choose", "injection[3].dose=1"], "injection"),
    (["--control", "injection[0].dose=3e5,1e6 cells"], "outside its bounds"),
])
def test_bad_design_input_is_refused_and_writes_nothing(tmp_path, capsys, extra, needle):
    f = tmp_path / "s.toml"
    f.write_text(SMALL)
    out = tmp_path / "d"
    args = ["design", str(f), "--out", str(out), "--no-figures"]
    if "--objective" not in extra:
        args += ["--objective", "auc:VEGF"]
    code, so, err = run_cli(args + extra, capsys)
    assert code == 2, (so, err)
    assert needle in err and "Traceback" not in err
    assert not out.exists() and not (tmp_path / "d.partial").exists()


@pytest.mark.slow   # fast path: test_design_cli_compares_products_each_with_its_own_controls_and_limits (the design CLI end to end)
def test_design_cli_ranks_alternatives_and_writes_a_runnable_scenario(tmp_path, capsys):
    f = tmp_path / "s.toml"
    f.write_text(SMALL.replace('time = "14 h"', 'time = "2 h"\nrepeat = { count = 2, every = "6 h" }')
                 .replace('threshold = "31 pg/mL"', 'threshold = "10 pg/mL"'))
    out = tmp_path / "d"
    code, so, err = run_cli(["design", str(f), "--objective", "hours_above:VEGF", "--control",
                             "injection[0].dose=1e4,2e6 cells", "injection[0].time=0 h,12 h",
                             "injection[0].every=2 h,12 h", "--budget", "4e5 cells", "--choose",
                             "injection[0].repeat.count=1,2", "--max-outer", "3", "--max-inner", "10",
                             "--out", str(out)], capsys)
    assert code in (0, 3), err
    assert "ranking" in so and "solve" in so
    info = json.loads((out / "design.json").read_text())
    assert len(info["alternatives"]) == 2
    ranks = [a["objective"]["exact_at_optimum"][0]["value"] for a in info["alternatives"]]
    assert ranks == sorted(ranks, reverse=True)
    best = info["best"]
    assert best["objective"]["exact_at_optimum"][0]["value"] >= best["objective"]["exact_at_start"][0]["value"]
    budget = next(c for c in best["constraints"]["at_optimum_exact"] if c["name"] == "cell budget")
    assert budget["met"]
    for fig in ("objective.png", "course.png", "tradeoff.png"):
        assert (out / fig).stat().st_size > 5000
    rows = (out / "alternatives.csv").read_text().splitlines()
    assert len(rows) == 3 and rows[0].startswith("rank,alternative")
    # designed.toml is a scenario with the optimum written in; running it gives the exact objective
    designed = sc.load(out / "designed.toml")
    dose = next(c for c in best["controls"] if c["name"] == "injection[0].dose")["optimum"]
    assert designed.data["injections"][0]["dose"] == pytest.approx(dose, rel=1e-8)
    raw = tomllib.loads((out / "designed.toml").read_text())
    assert "injection" in raw
    run_out = tmp_path / "run"
    assert cli.main(["run", str(out / "designed.toml"), "--out", str(run_out), "--no-figures",
                     "--precision", "double"]) == 0
    m = json.loads((run_out / "metrics.json").read_text())
    capsys.readouterr()
    hours = m["factors"]["VEGF"]["regions"]["border"]["mean_above_threshold_h"]
    assert hours == pytest.approx(best["objective"]["exact_at_optimum"][0]["value"], rel=1e-6)



def test_movable_sites_are_p1_sites_and_differentiable():
    """A MovableSource at a point gives PointSource.at's nodes and weights there (so the same solution),
    for its first position and for a moved one; the solution's gradient in a site coordinate matches
    central differences; a site pushed out of the tissue delivers on the boundary of its candidates."""
    disc = geometry.discretise(geometry.box_mesh([0, 0, 0], [2, 2, 1], [6, 6, 3]))
    x0 = np.array([[0.71, 0.93, 0.41], [1.37, 1.21, 0.62]])
    mov = solver.MovableSource.around(disc, x0, cells=40, name="s")
    ref = solver.PointSource.at(disc, x0, name="s")
    c = jnp.zeros((1, np.asarray(disc.mass).size))
    one = jnp.ones(1)
    np.testing.assert_allclose(np.asarray(mov.add(c, one)), np.asarray(ref.add(c, one)), rtol=1e-12, atol=1e-14)
    x1 = x0 + np.array([[0.13, -0.08, 0.05], [-0.11, 0.07, -0.09]])
    moved = eqx_set_x(mov, x1)
    np.testing.assert_allclose(np.asarray(moved.add(c, one)), np.asarray(solver.PointSource.at(disc, x1).add(c, one)),
                               rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(np.asarray(moved.placed()), x1, atol=1e-12)
    mass = np.asarray(disc.mass).reshape(-1)
    far = eqx_set_x(mov, x0 + np.array([[-5.0, 0, 0], [0, 0, 3.0]]))
    assert float((np.asarray(far.add(c, one)) @ mass)[0]) == pytest.approx(2.0, rel=1e-12)   # the amount is exact
    disc.locate(np.asarray(far.placed()))                                               # inside the tissue

    model = solver.Model(disc, sources=[mov])
    params = model.params(D=1e-3, decay=1e-4, sources=[solver.Constant(rate=1.0)])
    W = np.asarray(solver.Exposure.of(model).weights)
    probe = jnp.asarray(W[:, 0] * (np.asarray(disc.coordinates)[:, 0] > 1.0))

    def f(v):
        m = eqx_set_x(model.sources[0], mov.x.at[0, 0].set(v))
        mm = equinox_tree_at(model, m)
        sol = solver.simulate(mm, params, t_end=600.0, dt=60.0, method="cn")
        return jnp.sum(sol.final[0] * probe)

    v = 0.71
    g = float(jax.grad(f)(v))
    fd_ = (float(f(v + 1e-5)) - float(f(v - 1e-5))) / 2e-5
    assert g == pytest.approx(fd_, rel=1e-6) and g != 0.0


def eqx_set_x(src, x):
    import equinox as eqx

    return eqx.tree_at(lambda s: s.x, src, jnp.asarray(x, src.x.dtype))


def equinox_tree_at(model, src):
    import equinox as eqx

    return eqx.tree_at(lambda m: m.sources[0], model, src)


@pytest.mark.slow   # fast path: test_movable_sites_are_p1_sites_and_differentiable
def test_design_moves_a_site_and_writes_it(tmp_path, capsys, small):
    """A site coordinate as a control: the design's model has the P1 weights of the moved site, the
    exact value at the optimum is the surrogate's (same weights, same steps), and designed.toml
    lists the sites as points."""
    x0 = np.asarray(small.sites[0][0])
    spec = pd.Spec(objectives=["auc:VEGF"], controls={"injection[0].site[0].x": (x0[0] - 0.8, x0[0] + 0.8)}, dt=600.0,
                   max_outer=2, max_inner=10)
    one = pd.design_one(small, spec)
    res = one["result"]
    exact = one["exact_optimum"]["objectives"][0]["value"]
    assert exact >= one["exact_start"]["objectives"][0]["value"] * (1 - 1e-12)
    assert res.objective * 1e3 / 3600 == pytest.approx(exact, rel=1e-9)
    text = pd.designed_text(one["raw"] if "raw" in one else __import__("tomllib").loads(SMALL), one["controls"],
                            res.theta, "# test\n", small, one["model_opt"])
    s2 = sc.loads(text, source="designed.toml")
    pts = np.asarray(s2.data["injections"][0]["sites"]["points"])
    assert pts.shape == (3, 3)
    np.testing.assert_allclose(pts[1:], np.asarray(small.sites[0])[1:], atol=1e-6)
    np.testing.assert_allclose(pts[0], pd.delivered_sites(small, one["model_opt"].sources[0])[0], atol=1e-6)


MEDIUM = SMALL.split("[cells]")[0] + """
[[medium]]
time = "14 h"
volume = "20 uL"
concentration = { VEGF = "2 ng/mL" }
duration = "1 h"
retention = 1.0
sites = 3
"""


def test_design_cli_compares_products_each_with_its_own_controls_and_limits(tmp_path, capsys):
    """Cells against conditioned medium: each alternative takes the controls and the limits that apply to
    it (the cell budget to the cells, the medium budget to the medium), and both are ranked."""
    a, b = tmp_path / "cells.toml", tmp_path / "medium.toml"
    a.write_text(SMALL)
    b.write_text(MEDIUM)
    out = tmp_path / "d"
    code, so, err = run_cli(["design", str(a), str(b), "--objective", "auc:VEGF", "--control",
                             "injection[0].dose=1e4,1e6 cells", "medium[0].volume=1 uL,40 uL",
                             "medium[0].duration=10 min,4 h", "--budget", "3e5 cells", "--medium-budget", "30 uL",
                             "--max-outer", "2", "--max-inner", "6", "--out", str(out), "--no-figures"], capsys)
    assert code in (0, 3), err
    info = json.loads((out / "design.json").read_text())
    by = {a_["alternative"]: a_ for a_ in info["alternatives"]}
    assert set(by) == {"cells", "medium"}
    assert [c["name"] for c in by["cells"]["controls"]] == ["injection[0].dose"]
    assert {c["name"] for c in by["medium"]["controls"]} == {"medium[0].volume", "medium[0].duration"}
    assert by["cells"]["controls"][0]["optimum"] == pytest.approx(3e5, rel=1e-3)        # AUC grows with the dose
    vol = next(c for c in by["medium"]["controls"] if c["name"] == "medium[0].volume")
    assert vol["optimum"] == pytest.approx(30.0, rel=5e-3) and vol["optimum"] <= 30.0  # mm^3 = uL; few iterations
    assert [c["name"] for c in by["medium"]["constraints"]["optimiser"]] == ["medium budget"]


def test_medium_volume_and_concentration_are_separate_controls():
    b = build(sc.loads(MEDIUM, source="medium.toml"))
    avail = pd.available(b)
    vol, conc = avail["medium[0].volume"], avail["medium[0].concentration"]
    assert float(vol.get(b.params)) == pytest.approx(20.0) and float(conc.get(b.params)) == pytest.approx(2.0)  # pg/mm^3
    p = conc.set(vol.set(b.params, 40.0), 3.0)            # twice the volume, 1.5 x the concentration
    assert float(vol.get(p)) == pytest.approx(40.0) and float(conc.get(p)) == pytest.approx(3.0)
    k = 0
    ratio = np.asarray(p.sources[k].cumulative(DAY)) / np.asarray(b.params.sources[k].cumulative(DAY))
    np.testing.assert_allclose(ratio, 3.0, rtol=1e-12)
    text = pd.designed_text(__import__("tomllib").loads(MEDIUM), [vol, conc], [40.0, 3.0], "", b, b.model)
    m = sc.loads(text, source="designed.toml").data["media"][0]
    assert m["volume"] == pytest.approx(40.0) and m["amount"]["VEGF"] == pytest.approx(40.0 * 3.0)   # pg


def test_movable_grid_sites_are_trilinear_sites_and_differentiable():
    disc = geometry.discretise(geometry.box_grid([0, 0, 0], [2, 2, 1], [10, 10, 5]))
    x0 = np.array([[0.71, 0.93, 0.41]])
    mov = solver.MovableGridSource.around(disc, x0, name="s")
    c = jnp.zeros((1, *disc.spatial_shape))
    one = jnp.ones(1)
    for x in (x0, x0 + 0.137):
        ref = solver.PointSource.at(disc, x, name="s")
        np.testing.assert_allclose(np.asarray(eqx_set_x(mov, x).add(c, one)), np.asarray(ref.add(c, one)),
                                   rtol=1e-12, atol=1e-12)
    model = solver.Model(disc, sources=[mov])
    params = model.params(D=1e-3, decay=1e-4, sources=[solver.Constant(rate=1.0)])
    probe = jnp.asarray((np.asarray(disc.coordinates)[..., 0] > 1.0).reshape(disc.spatial_shape), float)

    def f(v):
        mm = equinox_tree_at(model, eqx_set_x(mov, mov.x.at[0, 0].set(v)))
        return jnp.sum(solver.simulate(mm, params, t_end=600.0, dt=60.0, method="cn").final[0] * probe)

    g = float(jax.grad(f)(0.77))
    fd_ = (float(f(0.77 + 1e-5)) - float(f(0.77 - 1e-5))) / 2e-5
    assert g == pytest.approx(fd_, rel=1e-6) and g != 0.0


def test_soft_minimum_of_several_objectives():
    """Several objectives are all wanted: SoftMin of q_i / s_i is their common value when equal, tends
    to the smallest as tau -> 0, and its gradient weights the smaller term most."""
    out = fd.Outcome({"auc": jnp.array([[2.0, 6.0]])}, None, jnp.zeros(1))
    a, b = fd.Accumulated("auc", 0, 0), fd.Accumulated("auc", 0, 1)
    assert float(fd.SoftMin((a, b), (2.0, 6.0))(out)) == pytest.approx(1.0, rel=1e-12)
    for tau, tol in ((0.05, 0.05), (0.001, 1e-3)):
        assert float(fd.SoftMin((a, b), (1.0, 2.0), tau)(out)) == pytest.approx(2.0, abs=tol)
    g = jax.grad(lambda m: fd.SoftMin((a, b), (1.0, 2.0), 0.05)(fd.Outcome({"auc": m}, None, jnp.zeros(1))))(
        jnp.array([[2.0, 6.0]]))
    assert float(g[0, 0]) > 0.9 and float(g[0, 1]) < 0.05
