"""Saturable uptake and ECM binding inside simulate: wiring, budget, positivity, gradients."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from paracrine import geometry
from paracrine import solver
from paracrine.solver.kinetics import step

KIN = dict(saturable={"Vmax": [[0.05, 0.2]], "Km": 0.5},
           binding={"kon": 0.4, "koff": 0.02, "capacity": [[1.0, 3.0]], "kdeg": 0.005})


def two_region_mesh(n=6):
    mesh = geometry.box_mesh([0, 0], [1, 1], n, regions={"remote": True, "border": geometry.halfspace(0, 0.5)})
    return geometry.discretise(mesh)


@pytest.mark.parametrize("method", ["rkl2", "cn"])
def test_uniform_field_follows_the_pointwise_kinetics(method):
    """With a uniform field diffusion does nothing: a step is two half steps of the kinetics."""
    disc = geometry.discretise(geometry.box_grid([0, 0], [1, 1], 4))
    model = solver.Model(disc)
    params = model.params(D=1e-2, decay=0.01, saturable={"Vmax": 0.3, "Km": 0.7},
                          binding={"kon": 0.5, "koff": 0.1, "capacity": 2.0, "kdeg": 0.02})
    sol = solver.simulate(model, params, t_end=10.0, dt=0.5, method=method, c0=np.full(model.state_shape, 3.0),
                          b0=np.full(model.state_shape, 0.2))
    c, b = np.array(3.0), np.array(0.2)
    for _ in range(40):
        c, b, _ = step(c, b, 0.25, kappa=0.01, V=0.3, Km=0.7, kon=0.5, koff=0.1, B=2.0, kdeg=0.02)
    np.testing.assert_allclose(np.asarray(sol.final), float(c), rtol=1e-12)
    np.testing.assert_allclose(np.asarray(sol.bound), float(b), rtol=1e-12)


@pytest.mark.parametrize("method", ["rkl2", "cn"])
def test_budget_closes_with_binding_and_saturable_uptake(method):
    disc = two_region_mesh()
    model = solver.Model(disc, sources=[solver.point_source(disc, [[0.3, 0.4]])])
    params = model.params(D=3e-3, decay=0.01, clearance=0.01, robin={"ymax": 0.02},
                          sources=[solver.Exponential(rate=2.0, k=0.05)], **KIN)
    sol = solver.simulate(model, params, t_end=40.0, dt=0.5, method=method, budget=True)
    b = {k: float(v[0]) for k, v in sol.budget.items()}
    assert set(b) == {"secreted", "decayed", "taken_up", "cleared", "to_boundary", "degraded_bound"}
    left = float(model.total(sol.final)[0] + model.total(sol.bound)[0])
    out = b["decayed"] + b["taken_up"] + b["cleared"] + b["to_boundary"] + b["degraded_bound"]
    assert b["secreted"] - out == pytest.approx(left, rel=1e-10)
    assert float(model.total(sol.bound)[0]) > 0.05 * left  # binding holds part of the tissue content (~11 % here)
    assert np.asarray(sol.final).min() >= 0 and np.asarray(sol.bound).min() >= 0
    # the bound pool never exceeds the capacity of its region
    cap = np.asarray(model.space.per_node(params.binding.capacity))
    assert np.all(np.asarray(sol.bound) <= cap * (1 + 1e-12))
    coarse = solver.simulate(model, params, t_end=40.0, dt=4.0, method=method)  # stiff: kon c dt ~ 80
    assert np.all(np.asarray(coarse.bound) <= cap * (1 + 1e-12)) and np.asarray(coarse.final).min() >= 0


def test_observe_gets_the_bound_field():
    disc = two_region_mesh()
    model = solver.Model(disc, sources=[solver.point_source(disc, [[0.3, 0.4]])])
    params = model.params(D=3e-3, sources=[solver.Constant(rate=1.0)], **KIN)
    content = solver.observe.tissue_amounts(model)
    sol = solver.simulate(model, params, t_end=5.0, dt=0.5, save_at=[5.0], observe=content)
    np.testing.assert_allclose(np.asarray(sol.ys[0]).sum(), float(model.total(sol.final)[0] + model.total(sol.bound)[0]),
                               rtol=1e-12)
    default = solver.simulate(model, params, t_end=5.0, dt=0.5, save_at=[5.0])
    assert isinstance(default.ys, tuple) and len(default.ys) == 2


def test_gradients_wrt_kinetic_parameters():
    disc = two_region_mesh(5)
    model = solver.Model(disc, sources=[solver.point_source(disc, [[0.3, 0.4]])])
    params = model.params(D=3e-3, decay=0.01, sources=[solver.Constant(rate=1.0)], **KIN)
    stepper = solver.plan(model, params, dt=0.5, method="cn")

    def loss(p):
        sol = solver.simulate(model, p, t_end=8.0, dt=0.5, save_at=[4.0, 8.0], method=stepper,
                              observe=solver.observe.tissue_amounts(model))
        return jnp.sum(sol.ys[:, 0, 1]) + 0.1 * jnp.sum(sol.ys[:, 0, 0] ** 2)

    grads = jax.grad(loss)(params)
    checks = [(lambda p: p.saturable.Vmax, (0, 1)), (lambda p: p.saturable.Km, (0,)),
              (lambda p: p.binding.kon, (0,)), (lambda p: p.binding.koff, (0,)),
              (lambda p: p.binding.capacity, (0, 0)), (lambda p: p.binding.kdeg, (0,))]
    for where, idx in checks:
        eps = 1e-5 * float(where(params)[idx])
        f = [float(loss(eqx.tree_at(where, params, where(params).at[idx].add(s * eps)))) for s in (1, -1)]
        assert float(where(grads)[idx]) == pytest.approx((f[0] - f[1]) / (2 * eps), rel=2e-5)


def test_kinetics_errors():
    disc = two_region_mesh(3)
    model = solver.Model(disc)
    with pytest.raises(ValueError, match=r"binding has unknown key 'Kd'; allowed: \['capacity', 'kdeg', 'koff', 'kon'\]"):
        model.params(D=1e-3, binding={"kon": 1.0, "koff": 1.0, "capacity": 1.0, "Kd": 1.0})
    with pytest.raises(ValueError, match=r"saturable needs \['Km'\]"):
        model.params(D=1e-3, saturable={"Vmax": 1.0})
    p = model.params(D=1e-3, saturable={"Vmax": 1.0, "Km": 0.0})
    with pytest.raises(ValueError, match=r"params.saturable.Km\[0\] = 0.0 \(factor 'factor'\); allowed: finite and > 0"):
        solver.simulate(model, p, t_end=1.0, dt=0.1)
    with pytest.raises(ValueError, match="steady_state solves linear models"):
        solver.steady_state(model, model.params(D=1e-3, decay=0.1, **KIN))
