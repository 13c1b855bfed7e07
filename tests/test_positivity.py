"""Positivity: random parameters never give a negative or non-finite value."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from paracrine import geometry
from paracrine import solver

GRID = geometry.discretise(geometry.box_grid([0, 0], [1, 1], 12, regions={"remote": True,
                                                                           "core": geometry.halfspace(0, 0.6)}))
MESH = geometry.discretise(geometry.box_mesh([0, 0], [1, 1], 6, regions={"remote": True,
                                                                          "core": geometry.halfspace(1, 0.5)}))
log_uniform = lambda lo, hi: st.floats(np.log10(lo), np.log10(hi)).map(lambda e: 10.0 ** e)  # noqa: E731


@pytest.mark.slow   # fast path: test_every_sink_on_random_parameters_positive_and_budget_closes (random parameters, every sink on)
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(disc=st.sampled_from([GRID, MESH]), method=st.sampled_from(["rkl2", "cn", "euler", "trbdf2"]),
       D=st.tuples(log_uniform(1e-5, 1.0), log_uniform(1e-5, 1.0)), decay=log_uniform(1e-6, 10.0),
       uptake=st.tuples(st.just(0.0), log_uniform(1e-6, 10.0)), rate=log_uniform(1e-3, 1e3),
       dt=log_uniform(1e-3, 1.0), seed=st.integers(0, 2 ** 16))
def test_random_parameters_keep_fields_non_negative(disc, method, D, decay, uptake, rate, dt, seed):
    model = solver.Model(disc, sources=[solver.point_source(disc, [[0.35, 0.55]])])
    params = model.params(D=[D], decay=decay, uptake=[uptake], sources=[solver.Constant(rate=rate, stop=1.0)])
    c0 = np.random.default_rng(seed).uniform(0, 1, model.state_shape) * (np.asarray(disc.mass) > 0).reshape(model.state_shape[1:])
    try:
        sol = solver.simulate(model, params, t_end=2.0, dt=dt, save_at=[0.5, 1.0, 2.0], method=method, c0=c0)
    except solver.StabilityError:
        assert method == "euler"
        return
    if not sol.ok:   # implicit steps against a strong sink: a reported failure, never a wrong success
        assert method in ("cn", "trbdf2") and int(sol.status) == int(np.asarray(solver.RESULTS.negative._value))
        return
    ys = np.asarray(sol.ys)
    assert np.all(np.isfinite(ys))
    assert ys.min() >= 0.0
    assert sol.ok, sol.message


TAGGED = geometry.discretise(geometry.box_mesh([0, 0], [1, 1], 6, regions={"remote": True,
                                                                           "core": geometry.halfspace(1, 0.5)}))


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(method=st.sampled_from(["rkl2", "cn", "trbdf2", "adaptive"]),
       D=log_uniform(1e-5, 1e-1), decay=log_uniform(1e-6, 1.0), uptake=log_uniform(1e-6, 1.0),
       clearance=log_uniform(1e-6, 1.0), beta=log_uniform(1e-4, 1.0), rate=log_uniform(1e-3, 1e3),
       dt=log_uniform(1e-2, 10.0))
def test_every_sink_on_random_parameters_positive_and_budget_closes(method, D, decay, uptake, clearance, beta,
                                                                     rate, dt):
    """Decay, region uptake, clearance and Robin all on, random values: non-negative and finite, or a
    failure status; and the budget closes (secreted = lost to each sink + left)."""
    model = solver.Model(TAGGED, sources=[solver.point_source(TAGGED, [[0.35, 0.55]])])
    params = model.params(D=D, decay=decay, uptake=[[0.0, uptake]], clearance=[[clearance, 0.0]],
                          robin={model.boundaries[0]: beta}, sources=[solver.Constant(rate=rate, stop=1.0)])
    steps = dict(rtol=1e-3) if method == "adaptive" else dict(dt=dt, method=method)
    sol = solver.simulate(model, params, t_end=5.0, save_at=[1.0, 5.0], budget=True, **steps)
    ys = np.asarray(sol.ys)
    if not sol.ok:   # CN and TR-BDF2 against a strong sink: a reported failure, never a wrong success;
        assert method in ("cn", "trbdf2"), sol.message   # error control refuses such steps
        return
    assert np.all(np.isfinite(ys)) and ys.min() >= 0.0
    b = {k: float(v[0]) for k, v in sol.budget.items()}
    left = float(model.total(sol.final)[0])
    lost = sum(v for k, v in b.items() if k != "secreted")
    assert abs(b["secreted"] - lost - left) <= 1e-9 * b["secreted"]
