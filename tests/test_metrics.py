"""solver.Exposure: exposure metrics accumulated at every step, against closed forms."""

import math
from pathlib import Path

import numpy as np
import pytest

from paracrine import geometry
from paracrine import solver
from helpers import slope


def well_mixed(kind):
    """One region, a uniform field stays uniform under zero-flux diffusion: c' = f(t) - k c."""
    if kind == "grid":
        disc = geometry.discretise(geometry.box_grid([0, 0], [1, 1], 3))
    else:
        disc = geometry.discretise(geometry.box_mesh([0, 0], [1, 1], 2))
    return disc, float(np.asarray(disc.mass).sum())


@pytest.mark.parametrize("kind", ["grid", "mesh"])
def test_decaying_bolus_auc_is_analytic_and_second_order(kind):
    """c(0) = A / V, c' = -k c: AUC(T) = A / (V k) (1 - exp(-k T)), peak A / V at t = 0."""
    disc, V = well_mixed(kind)
    model = solver.Model(disc)
    k, T, A = 1e-4, 4e4, 2.0
    params = model.params(D=1e-3, decay=k)
    acc_def = solver.Exposure.of(model)
    c0 = np.full(model.state_shape, A / V) * (np.asarray(disc.mass).reshape(model.state_shape[1:]) > 0)
    exact = A / (V * k) * (1 - math.exp(-k * T))
    errs, hs = [], [800.0, 400.0, 200.0, 100.0]
    stepper = solver.plan(model, params, dt=max(hs))  # one RKL2 stage count: one error constant
    for dt in hs + [10.0]:
        m = solver.simulate(model, params, t_end=T, dt=dt, c0=c0, metrics=acc_def, method=stepper).metrics
        errs.append(abs(float(m["auc"][0, 0]) / exact - 1))
        assert float(m["peak_mean"][0, 0]) == pytest.approx(A / V, rel=1e-12)
        assert float(m["peak_mean_time"][0, 0]) == 0.0 and float(m["peak_max_time"][0, 0]) == 0.0
    assert errs[-1] < 1e-6, errs
    assert slope(hs, errs[:-1]) == pytest.approx(2.0, abs=0.05), errs


@pytest.mark.parametrize("kind", ["grid", "mesh"])
def test_infusion_peak_time_value_and_auc(kind):
    """A uniform infusion of A over d (FieldSource + Bolus(duration=d)), decay k: the mean peaks
    at t = d at q / k (1 - exp(-k d)) with q = A / (V d); AUC(T) = (A / V - c(T)) / k."""
    disc, V = well_mixed(kind)
    src = solver.field_source(disc, np.ones(disc.n_nodes))
    model = solver.Model(disc, sources=[src])
    k, T, A, d = 2e-4, 3e4, 5.0, 1800.0
    params = model.params(D=1e-3, decay=k, sources=[solver.Bolus(amount=[A], time=0.0, duration=d)])
    q = A / (V * d)
    peak = q / k * (1 - math.exp(-k * d))
    cT = peak * math.exp(-k * (T - d))
    sol = solver.simulate(model, params, t_end=T, dt=10.0, metrics=solver.Exposure.of(model))
    m = sol.metrics
    assert float(m["peak_mean_time"][0, 0]) == pytest.approx(d, abs=1e-9)
    assert float(m["peak_mean"][0, 0]) == pytest.approx(peak, rel=1e-6)
    assert float(m["peak_max"][0, 0]) == pytest.approx(peak, rel=1e-6)
    assert float(m["auc"][0, 0]) == pytest.approx((A / V - cT) / k, rel=1e-6)


def test_linear_ramp_crossing_mid_step_is_timed_exactly():
    """c = q t (an infusion without losses is a straight line): above theta for T - theta / q,
    with the crossing inside a step; both per region mean and per node."""
    disc, V = well_mixed("grid")
    model = solver.Model(disc, sources=[solver.field_source(disc, np.ones(disc.n_nodes))])
    T, A, h = 70.0, 7.0, 7.0
    q = A / (V * T)
    theta = q * 31.5  # crossing at t = 31.5 s, half-way through the 5th step of 7 s
    params = model.params(D=1e-3, sources=[solver.Bolus(amount=[A], time=0.0, duration=T)])
    sol = solver.simulate(model, params, t_end=T, dt=h, method="cn",
                          metrics=solver.Exposure.of(model, thresholds=[theta]))
    m = sol.metrics
    assert float(m["above_mean"][0, 0]) == pytest.approx(T - 31.5, rel=1e-12)
    np.testing.assert_allclose(np.asarray(m["above_node"][0]), T - 31.5, rtol=1e-12)
    assert float(m["auc"][0, 0]) == pytest.approx(q * T ** 2 / 2, rel=1e-12)  # trapezoid is exact on a line


def test_fraction_above_cases():
    f = solver.metrics.fraction_above
    a = np.array([0.0, 1.0, 0.0, 2.0, 0.5, 0.5, 0.3])
    b = np.array([1.0, 0.0, 0.2, 3.0, 0.5, 0.5, 0.3])
    theta = np.array([0.3, 0.3, 0.3, 0.3, 0.3, 0.7, 0.3])
    want = [0.7, 0.7, 0.0, 1.0, 1.0, 0.0, 0.0]  # rising, falling, below, above, flat above/below, at
    np.testing.assert_allclose(np.asarray(f(a, b, theta)), want, rtol=1e-12)
    assert float(f(1.0, 2.0, np.inf)) == 0.0  # no threshold


def two_region_problem(binding):
    disc = geometry.discretise(geometry.box_mesh([0, 0], [1, 1], 8, regions={"remote": True,
                                                                             "border": geometry.halfspace(0, 0.5)}))
    model = solver.Model(disc, factors=["a", "b"], sources=[solver.point_source(disc, [[0.7, 0.4]])])
    params = model.params(D=[[2e-3, 1e-3], [4e-3, 2e-3]], decay=[1e-3, 3e-3], uptake=[[0.0, 1e-3]],
                          binding=dict(kon=1e-2, koff=1e-3, capacity=[[1.0, 2.0]]) if binding else None,
                          sources=[solver.Exponential(rate=[2.0, 1.0], k=1e-3)])
    return disc, model, params


@pytest.mark.parametrize("binding", [False, True])
def test_chunked_equals_one_call(binding):
    """metrics0 continues an earlier chunk's accumulator: two chunks give one call's metrics."""
    _, model, params = two_region_problem(binding)
    acc = solver.Exposure.of(model, thresholds=[0.05, np.inf])
    kw = dict(dt=20.0, metrics=acc)
    one = solver.simulate(model, params, t_end=1600.0, **kw)
    a = solver.simulate(model, params, t_end=800.0, **kw)
    two = solver.simulate(model, params, t0=800.0, t_end=1600.0, c0=a.final, b0=a.bound, metrics0=a.metrics, **kw)
    assert set(one.metrics) == set(two.metrics) and ("auc_bound" in one.metrics) == binding
    for key in one.metrics:
        np.testing.assert_allclose(np.asarray(two.metrics[key]), np.asarray(one.metrics[key]), rtol=1e-12,
                                   atol=1e-300, err_msg=key)
    m = one.metrics
    assert np.all(np.asarray(m["above_mean"])[1] == 0) and np.asarray(m["above_node"])[0].max() > 0
    assert 0 < float(m["peak_mean_time"][0, 1]) <= 1600.0


def test_metrics_match_a_fine_host_integration_and_do_not_retrace():
    """AUC and peak from the accumulator equal the trapezoid / max over a save at every step;
    a second accumulator with other thresholds reuses the compiled program."""
    disc, model, params = two_region_problem(False)
    ts = np.arange(1, 101) * 20.0
    acc = solver.Exposure.of(model, thresholds=[0.05, 0.02])
    sol = solver.simulate(model, params, t_end=2000.0, dt=20.0, save_at=ts, metrics=acc)
    ys = np.asarray(sol.ys)  # every step saved
    W = np.asarray(acc.weights)
    means = np.concatenate([np.zeros((1, 2, 2)), ys @ W / W.sum(0)])
    t = np.concatenate([[0.0], ts])
    np.testing.assert_allclose(np.asarray(sol.metrics["auc"]), np.trapezoid(means, t, axis=0), rtol=1e-12)
    np.testing.assert_allclose(np.asarray(sol.metrics["peak_mean"]), means.max(0), rtol=1e-12)
    np.testing.assert_allclose(np.asarray(sol.metrics["peak_mean_time"]), t[means.argmax(0)], rtol=1e-12)
    n = solver.simulate.__globals__["TRACE_COUNT"]["RKL2"]
    solver.simulate(model, params, t_end=2000.0, dt=20.0, save_at=ts,
                    metrics=solver.Exposure.of(model, thresholds=[0.1, 0.01]))
    assert solver.simulate.__globals__["TRACE_COUNT"]["RKL2"] == n


def test_exposure_rejects_bad_input():
    with pytest.raises(ValueError, match="non-negative"):
        solver.Exposure(-np.ones((3, 1)), [1.0])
    with pytest.raises(ValueError, match="one number per factor"):
        solver.Exposure(np.ones((3, 1)), [np.nan])


def _example(tmp_path, interval):
    """examples/medium_equal_amount.toml shortened to 1 day on a coarse mesh, output every `interval`."""
    from paracrine import scenario as sc

    root = Path(__file__).resolve().parents[1]
    text = (root / "examples" / "medium_equal_amount.toml").read_text()
    for a, b in (('end = "7 d"', 'end = "1 d"'), ('mesh_size = "0.4 mm"', 'mesh_size = "0.7 mm"'),
                 ('refine = "0.25 mm"\n', ""), ('maps = ["1 h", "6 h", "1 d", "7 d"]', 'maps = ["1 d"]'),
                 ('interval = "1 h"', f'interval = "{interval}"')):
        assert a in text, a
        text = text.replace(a, b)
    path = tmp_path / f"medium_{interval.replace(' ', '')}.toml"
    path.write_text(text)
    return sc.load(path)


def test_medium_bolus_metrics_do_not_depend_on_the_output_interval(tmp_path):
    """The conditioned-medium bolus peaks within the first hour: with hourly frames the old host
    metrics missed most of its AUC; the accumulated ones agree between 1 h and 1 min output, and
    with 1-min frames (one per step) equal the trapezoid of regions.csv."""
    import csv
    import json

    from paracrine import runner

    m = {}
    for interval in ("1 h", "1 min"):
        out = runner.run(_example(tmp_path, interval), tmp_path / interval.replace(" ", ""), progress=False,
                         figures=False)
        m[interval] = json.loads((out / "metrics.json").read_text())
        with open(out / "regions.csv") as fh:
            rows = [r for r in csv.DictReader(fh) if r["factor"] == "VEGF" and r["region"] == "border"]
        t = np.array([0.0] + [float(r["time_h"]) for r in rows])
        frames = np.trapezoid(np.array([0.0] + [float(r["mean_pg_per_mL"]) for r in rows]), t)
        auc = m[interval]["factors"]["VEGF"]["regions"]["border"]["auc_pg_per_mL_h"]
        if interval == "1 h":
            assert frames < 0.5 * auc  # what hourly frames made of the bolus
        else:
            assert frames == pytest.approx(auc, rel=1e-4)
    assert m["1 h"]["time_step_s"] == m["1 min"]["time_step_s"] == 60.0
    for f, v in m["1 h"]["factors"].items():
        for region, a in v["regions"].items():
            b = m["1 min"]["factors"][f]["regions"][region]
            assert set(a) == set(b)
            for key in a:
                assert a[key] == pytest.approx(b[key], rel=1e-3, abs=1e-9), (f, region, key)
    border = m["1 h"]["factors"]["VEGF"]["regions"]["border"]
    assert border["peak_mean_time_h"] < 0.5 and border["mean_above_threshold_h"] > 0
