"""Capillary clearance by region and Robin flux through tagged boundaries."""

import numpy as np
import pytest
from scipy.optimize import brentq

from paracrine import geometry
from paracrine import solver
from helpers import slope


def test_robin_slab_eigenmode_converges_at_second_order():
    """-D c'' on [0, L], c'(0) = 0, -D c'(L) = beta c(L): c = cos(mu x / L) e^{-D mu^2 t / L^2}, mu tan mu = beta L / D."""
    L, D, beta, T = 1.0, 0.05, 0.08, 4.0
    mu = brentq(lambda m: m * np.tan(m) - beta * L / D, 1e-9, np.pi / 2 - 1e-9)
    errs, hs = [], []
    for n in (8, 16, 32):
        mesh = geometry.box_mesh([0, 0], [L, 0.1], [n, max(2, n // 4)])  # one cell across would lump unevenly
        disc = geometry.discretise(mesh)
        model = solver.Model(disc)
        c0 = np.cos(mu * mesh.points[:, 0] / L)[None]
        params = model.params(D=D, robin={"xmax": beta})
        sol = solver.simulate(model, params, t_end=T, dt=T / 200, method="cn", c0=c0, budget=True)
        exact = c0 * np.exp(-D * mu ** 2 * T / L ** 2)
        errs.append(float(np.linalg.norm(sol.final - exact) / np.linalg.norm(exact)))
        hs.append(L / n)
        b = {k: float(v[0]) for k, v in sol.budget.items()}
        lost = float(model.total(c0)[0] - model.total(sol.final)[0])
        assert b["to_boundary"] == pytest.approx(lost, rel=1e-10)
    assert errs[-1] < 5e-5
    assert slope(hs, errs) >= 1.8, errs


def test_budget_splits_losses_by_mechanism():
    mesh = geometry.box_mesh([0, 0, 0], [1, 1, 1], 4, regions={"remote": True, "border": geometry.halfspace(0, 0.5)})
    disc = geometry.discretise(mesh)
    model = solver.Model(disc, sources=[solver.point_source(disc, [[0.3, 0.5, 0.5]])])
    params = model.params(D=1e-2, decay=0.01, uptake=[[0.0, 0.02]], clearance=[[0.03, 0.01]],
                          robin={"zmin": 0.05, "xmax": 0.02}, sources=[solver.Constant(rate=1.0, stop=5.0)])
    sol = solver.simulate(model, params, t_end=20.0, dt=0.25, method="rkl2", budget=True)
    b = {k: float(v[0]) for k, v in sol.budget.items()}
    assert set(b) == {"secreted", "decayed", "taken_up", "cleared", "to_boundary"}
    left = float(model.total(sol.final)[0])
    assert b["secreted"] == pytest.approx(5.0, rel=1e-12)
    assert b["secreted"] - b["decayed"] - b["taken_up"] - b["cleared"] - b["to_boundary"] == pytest.approx(left, rel=1e-10)
    assert min(b["decayed"], b["taken_up"], b["cleared"], b["to_boundary"]) > 0


def test_uniform_field_loses_to_each_mechanism_in_proportion():
    disc = geometry.discretise(geometry.box_grid([0, 0], [1, 1], 6))
    model = solver.Model(disc)
    params = model.params(D=1e-3, decay=0.01, uptake=0.02, clearance=0.03)
    sol = solver.simulate(model, params, t_end=10.0, dt=1.0, c0=np.ones(model.state_shape), budget=True)
    b = {k: float(v[0]) for k, v in sol.budget.items()}
    final = np.asarray(sol.final)
    # the losses are in the operator: the uniform field decays by RKL2's stability function, second
    # order against exp (kappa h = 0.06), and the lost amount splits 1 : 2 : 3 exactly
    assert np.ptp(final) <= 1e-14
    np.testing.assert_allclose(final, np.exp(-0.06 * 10.0), rtol=1e-3)
    lost = (1 - final.flat[0]) * 1.0
    np.testing.assert_allclose([b["decayed"], b["taken_up"], b["cleared"]], np.array([1, 2, 3]) / 6 * lost, rtol=1e-12)


def test_steady_state_with_clearance_and_robin_matches_time_marching():
    mesh = geometry.box_mesh([0, 0], [1, 1], 10)
    disc = geometry.discretise(mesh)
    model = solver.Model(disc, sources=[solver.point_source(disc, [[0.5, 0.5]])])
    params = model.params(D=1e-2, clearance=0.05, robin={"xmin": 0.1}, sources=[solver.Constant(rate=1.0)])
    ss = np.asarray(solver.steady_state(model, params).c)
    sol = solver.simulate(model, params, t_end=400.0, dt=0.5, method="cn")
    np.testing.assert_allclose(np.asarray(sol.final), ss, rtol=1e-4, atol=1e-6 * ss.max())


def test_clearance_and_robin_errors():
    mesh = geometry.box_mesh([0, 0], [1, 1], 3)
    model = solver.Model(geometry.discretise(mesh))
    with pytest.raises(ValueError, match=r"robin names unknown boundary 'endo'; this geometry's boundaries are \['xmin'"):
        model.params(D=1e-3, robin={"endo": 0.1})
    p = model.params(D=1e-3, clearance=-0.1)
    with pytest.raises(ValueError, match=r"params.clearance\[0, 0\] = -0.1 \(factor 'factor', region 'tissue'\)"):
        solver.simulate(model, p, t_end=1.0, dt=0.1)
    grid = solver.Model(geometry.discretise(geometry.box_grid([0, 0], [1, 1], 3)))
    with pytest.raises(ValueError, match=r"robin names unknown boundary 'xmin'; this geometry's boundaries are \[\]"):
        grid.params(D=1e-3, robin={"xmin": 0.1})


@pytest.mark.parametrize("method", ["rkl2", "cn"])
def test_gradients_wrt_clearance_and_robin(method):
    import equinox as eqx
    import jax
    import jax.numpy as jnp

    mesh = geometry.box_mesh([0, 0], [1, 1], 6, regions={"remote": True, "border": geometry.halfspace(0, 0.5)})
    disc = geometry.discretise(mesh)
    model = solver.Model(disc, sources=[solver.point_source(disc, [[0.4, 0.5]])])
    params = model.params(D=5e-3, decay=0.01, clearance=[[0.02, 0.05]], robin={"xmax": 0.03, "ymin": 0.01},
                          sources=[solver.Constant(rate=1.0)])
    stepper = solver.plan(model, params, dt=0.5, method=method)

    def loss(p):
        sol = solver.simulate(model, p, t_end=10.0, dt=0.5, save_at=[5.0, 10.0], method=stepper,
                              observe=solver.observe.region_amounts(model))
        return jnp.sum(sol.ys[:, 0, 1]) + jnp.sum(sol.ys[:, 0, 0]) ** 2

    grads = jax.grad(loss)(params)
    # boundaries are ordered by tag: xmin, xmax, ymin, ymax
    for where, idx in [(lambda p: p.clearance, (0, 1)), (lambda p: p.robin, (0, 1)), (lambda p: p.robin, (0, 2))]:
        value = float(where(params)[idx])
        eps = 1e-5 * value
        f = [float(loss(eqx.tree_at(where, params, where(params).at[idx].add(s * eps)))) for s in (1, -1)]
        assert float(where(grads)[idx]) == pytest.approx((f[0] - f[1]) / (2 * eps), rel=1e-5)
