"""V3 mass balance and V4 well-mixed limits."""

import numpy as np
import pytest

from paracrine import geometry
from paracrine import solver


def two_region(kind, dim=2, n=8):
    lo, hi = np.zeros(dim), np.ones(dim)
    regions = {"remote": True, "border": geometry.halfspace(0, 0.5)}
    geo = geometry.box_grid(lo, hi, n, regions=regions, mask=lambda x: x[..., 1] < 0.9) if kind == "grid" \
        else geometry.box_mesh(lo, hi, n, regions=regions)
    return geometry.discretise(geo)


@pytest.mark.parametrize("kind,dim", [("grid", 2), ("grid", 3), ("mesh", 2), ("mesh", 3)])
@pytest.mark.parametrize("method", ["euler", "rkl2", "cn"])
def test_zero_flux_diffusion_conserves_to_round_off(kind, dim, method, rng):
    disc = two_region(kind, dim=dim, n=8 if dim == 2 else 5)
    model = solver.Model(disc, factors=["a", "b"])
    c0 = rng.uniform(0, 1, model.state_shape) * np.asarray(disc.mass > 0)
    params = model.params(D=[[1e-2, 5e-3], [2e-3, 4e-2]])
    dt = 0.02 if method == "euler" else 0.5
    sol = solver.simulate(model, params, t_end=20.0, dt=dt, method=method, c0=c0)
    before = np.asarray(model.total(c0))
    after = np.asarray(model.total(sol.final))
    np.testing.assert_allclose(after, before, rtol=1e-12, atol=0)
    assert float(np.max(np.abs(sol.final - c0))) > 1e-3, "the field should have changed"


@pytest.mark.parametrize("kind", ["grid", "mesh"])
@pytest.mark.parametrize("method", ["rkl2", "cn"])
def test_v3_budget_closes_and_uptake_matches_region_integral(kind, method):
    """A(T) - A(0) = secreted - decayed - taken up, and uptake = integral of u A_border dt."""
    disc = two_region(kind, n=12)
    model = solver.Model(disc, sources=[solver.point_source(disc, [[0.3, 0.4], [0.7, 0.6]])])
    k, u = 0.05, 0.2
    params = model.params(D=2e-3, decay=k, uptake=[[0.0, u]], sources=[solver.Exponential(rate=2.0, k=0.1, start=1.0)])
    ts = np.linspace(0, 30, 601)
    border = np.asarray(disc.mass_region[:, 1] if kind == "mesh" else
                        (disc.region_index == 1) * disc.grid.voxel_volume).reshape(-1)
    obs = lambda c, t: (c.reshape(1, -1) @ border)  # noqa: E731  amount in the border zone
    sol = solver.simulate(model, params, t_end=30.0, dt=0.05, save_at=ts, method=method, observe=obs, budget=True)
    assert sol.ok
    b = {key: float(v[0]) for key, v in sol.budget.items()}
    left = float(model.total(sol.final)[0])
    np.testing.assert_allclose(b["secreted"] - b["decayed"] - b["taken_up"], left, rtol=1e-12)
    # exact secreted amount: 2 sites x 2 pg/s x (1 - e^{-0.1 * 29}) / 0.1
    np.testing.assert_allclose(b["secreted"], 2 * 2.0 * (1 - np.exp(-0.1 * 29)) / 0.1, rtol=1e-12)
    a_border = np.asarray(sol.ys)[:, 0]
    np.testing.assert_allclose(b["taken_up"], np.trapezoid(u * a_border, ts), rtol=2e-3)
    # the rest is decay of the whole amount: k * integral of A
    assert b["decayed"] > 0 and b["taken_up"] > 0


@pytest.mark.parametrize("method", ["rkl2", "cn", "trbdf2"])
@pytest.mark.parametrize("kind", ["grid", "mesh"])
def test_v4_uniform_field_stays_uniform_and_decays_at_second_order(kind, method):
    """Decay and uptake are in the operator: a uniform field stays uniform (to round-off) and decays
    by the stepper's stability function (to the CG tolerance), second order against exp(-kappa t)."""
    disc = two_region(kind)
    model = solver.Model(disc)
    c0 = np.where(np.asarray(disc.mass).reshape(model.state_shape) > 0, 3.0, 0.0)
    params = model.params(D=1e-2, decay=0.03, uptake=0.07)
    tissue = c0 > 0
    errs = []
    stepper = solver.plan(model, params, dt=0.5, method=method)  # one stage count for both steps
    for dt in (0.5, 0.25):
        sol = solver.simulate(model, params, t_end=10.0, dt=dt, save_at=[2.0, 10.0], method=stepper, c0=c0)
        y = np.asarray(sol.ys)[:, tissue]
        assert np.ptp(y, axis=1).max() <= 1e-9 * y.max()  # CG tolerance 1e-10
        errs.append(np.abs(y[:, 0] / (3.0 * np.exp(-0.1 * np.array([2.0, 10.0]))) - 1).max())
    assert errs[0] < 1e-3
    assert abs(np.log2(errs[0] / errs[1]) - 2.0) <= 0.2, errs


def test_v4_secretion_from_a_uniform_depot_matches_closed_form():
    """dA/dt = q e^{-a t} - kappa A:  A = q (e^{-a t} - e^{-kappa t}) / (kappa - a); second order in dt."""
    disc = geometry.discretise(geometry.box_mesh([0, 0], [1, 1], 4))
    model = solver.Model(disc, sources=[solver.field_source(disc, np.ones(disc.n_nodes))])
    q, a, kappa, T = 5.0, 0.3, 0.8, 4.0
    params = model.params(D=1e-2, decay=kappa, sources=[solver.Exponential(rate=q, k=a)])
    exact = q * (np.exp(-a * T) - np.exp(-kappa * T)) / (kappa - a)
    errs = []
    for dt in [0.4, 0.2, 0.1]:
        sol = solver.simulate(model, params, t_end=T, dt=dt, method="cn")
        errs.append(abs(float(model.total(sol.final)[0]) / exact - 1))
    assert errs[-1] < 1e-3
    assert np.log2(errs[0] / errs[1]) > 1.8 and np.log2(errs[1] / errs[2]) > 1.8, errs


def test_profiles_cumulative_and_rate_agree():
    import jax
    import jax.numpy as jnp

    profiles = [solver.Constant(rate=[2.0], start=1.0, stop=3.0), solver.Exponential(rate=[2.0], k=0.5, start=1.0),
                solver.PiecewiseLinear(times=[0.5, 1.0, 3.0], rates=[[0.0, 4.0, 1.0]])]
    totals = [4.0, 2.0 / 0.5, 0.5 * 4.0 * 0.5 + 0.5 * (4.0 + 1.0) * 2.0]
    for p, tot in zip(profiles, totals):
        np.testing.assert_allclose(p.cumulative(jnp.asarray(1e6))[0], tot, rtol=1e-12)
        for t in [0.7, 1.5, 2.9]:
            dq = jax.grad(lambda s: p.cumulative(s)[0])(jnp.asarray(t))
            np.testing.assert_allclose(dq, p.rate_at(jnp.asarray(t))[0], rtol=1e-10)
