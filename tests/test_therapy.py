"""Cells (retention, two-phase survival, secretion), conditioned medium, injection sites."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.integrate import quad

from paracrine import geometry
from paracrine import solver

DAY = 86400.0


def cells_profile(**kw):
    args = dict(dose=[1e6, 5e5], time=[0.0, 2 * DAY], retention=[0.15, 0.10], secretion=[7e-9, 7e-8],
                fast_fraction=0.45, k_fast=np.log(2) / 1800.0, k_slow=np.log(2) / (3.6 * DAY))
    args.update(kw)
    return solver.CellSecretion(**args)


def test_cells_and_secreted_amount_closed_forms():
    p = cells_profile()
    # cells right after the first injection: dose x retention; later: the two-phase curve
    assert float(p.cells(0.0)) == pytest.approx(1e6 * 0.15)
    tau = 1 * DAY
    expect = 1e6 * 0.15 * (0.45 * np.exp(-p.k_fast * tau) + 0.55 * np.exp(-p.k_slow * tau))
    assert float(p.cells(tau)) == pytest.approx(expect, rel=1e-12)
    for t in [0.5 * DAY, 2.5 * DAY, 9 * DAY]:
        num, _ = quad(lambda s: float(p.cells(s)), 0.0, t, points=[2 * DAY] if t > 2 * DAY else None, limit=200)
        assert float(p.cell_seconds(t)) == pytest.approx(num, rel=1e-8)
        np.testing.assert_allclose(np.asarray(p.cumulative(t)), np.array([7e-9, 7e-8]) * num, rtol=1e-8)


def test_secreted_amount_enters_the_tissue_exactly():
    disc = geometry.discretise(geometry.box_mesh([0, 0, 0], [2, 2, 1], [8, 8, 4]))
    sites = solver.spread_sites(disc, 3)
    model = solver.Model(disc, factors=["VEGF", "HGF"], sources=[solver.point_source(disc, sites, name="cells"),
                                                                  solver.point_source(disc, [[1, 1, 0.5]], name="cm")])
    prof = cells_profile()
    cm = solver.Bolus(amount=[50.0, 400.0], time=0.5 * DAY)
    params = model.params(D=1e-4, decay=3e-4, sources=[prof, cm])
    sol = solver.simulate(model, params, t_end=3 * DAY, dt=600.0, method="rkl2", budget=True)
    expected = 3 * np.asarray(prof.cumulative(3 * DAY)) + np.array([50.0, 400.0])
    np.testing.assert_allclose(np.asarray(sol.budget["secreted"]), expected, rtol=1e-10)


def test_bolus_without_losses_is_conserved():
    disc = geometry.discretise(geometry.box_grid([0, 0], [1, 1], 8))
    model = solver.Model(disc, sources=[solver.point_source(disc, [[0.3, 0.3]])])
    params = model.params(D=1e-3, sources=[solver.Bolus(amount=10.0, time=5.0)])
    sol = solver.simulate(model, params, t_end=20.0, dt=1.0, save_at=[4.0, 20.0])
    totals = np.asarray([model.total(y)[0] for y in sol.ys])
    np.testing.assert_allclose(totals, [0.0, 10.0], atol=1e-12)


def test_gradients_wrt_cell_parameters():
    disc = geometry.discretise(geometry.box_mesh([0, 0], [1, 1], 5))
    model = solver.Model(disc, sources=[solver.point_source(disc, [[0.5, 0.5]])])
    prof = cells_profile(time=[0.0, 600.0], k_fast=1e-3, k_slow=1e-4, secretion=[7e-9])
    params = model.params(D=1e-3, decay=1e-3, sources=[prof])
    stepper = solver.plan(model, params, dt=100.0, method="cn")

    def loss(p):
        sol = solver.simulate(model, p, t_end=2000.0, dt=100.0, save_at=[1000.0, 2000.0], method=stepper,
                              observe=solver.observe.region_amounts(model))
        return jnp.sum(sol.ys)

    grads = jax.grad(loss)(params)
    for name, idx in [("dose", (1,)), ("retention", (0,)), ("k_slow", ()), ("fast_fraction", ()), ("secretion", (0,))]:
        where = lambda p, name=name: getattr(p.sources[0], name)  # noqa: E731
        value = float(where(params)[idx])
        eps = 1e-5 * value
        f = [float(loss(eqx.tree_at(where, params, where(params).at[idx].add(s * eps)))) for s in (1, -1)]
        assert float(where(grads)[idx]) == pytest.approx((f[0] - f[1]) / (2 * eps), rel=1e-5), name


def test_spread_sites_cover_the_region():
    mesh = geometry.box_mesh([0, 0], [4, 1], [40, 10], regions={"remote": True, "border": geometry.halfspace(0, 2.0)})
    disc = geometry.discretise(mesh)
    sites = solver.spread_sites(disc, 4, region="border")
    assert np.all(sites[:, 0] >= 2.0)
    gaps = np.linalg.norm(sites[:, None] - sites[None], axis=-1)[np.triu_indices(4, 1)]
    assert gaps.min() > 0.5  # spread out, not clustered
    with pytest.raises(ValueError, match="region 'core' is not one of"):
        solver.spread_sites(disc, 2, region="core")


def test_cell_parameter_errors():
    disc = geometry.discretise(geometry.box_mesh([0, 0], [1, 1], 3))
    model = solver.Model(disc, sources=[solver.point_source(disc, [[0.5, 0.5]], name="msc")])
    with pytest.raises(ValueError, match=r"sources\[0\] \(CellSecretion\): per-factor values must be a scalar or \(1,\)"):
        model.params(D=1e-3, sources=[cells_profile()])
    p = model.params(D=1e-3, sources=[cells_profile(retention=[0.15, 1.4], secretion=7e-9)])
    with pytest.raises(ValueError, match=r"sources\['msc'\].retention\[1\] = 1.4 .*allowed: a fraction in \[0, 1\]"):
        solver.simulate(model, p, t_end=10.0, dt=1.0)


def test_simulation_in_chunks_equals_one_run():
    """simulate(t0=...) continues a run exactly: sources are read at absolute times (what `paracrine run`
    relies on for chunks and resume)."""
    mesh = geometry.box_mesh([0, 0], [2.0, 2.0], [8, 8], regions={"a": True})
    disc = geometry.discretise(mesh)
    model = solver.Model(disc, factors=["f"], sources=[solver.point_source(disc, [[1.0, 1.0]])])
    cells = solver.CellSecretion(dose=[100.0, 50.0], time=[0.0, 250.0], retention=[0.5, 0.5], secretion=[1.0],
                                 fast_fraction=0.4, k_fast=1e-2, k_slow=1e-3)
    params = model.params(D=1e-3, decay=1e-3, sources=[cells])
    ts = np.array([100.0, 200.0, 300.0, 400.0])
    one = solver.simulate(model, params, t_end=400.0, dt=10.0, save_at=ts)
    a = solver.simulate(model, params, t_end=200.0, dt=10.0, save_at=ts[:2])
    b = solver.simulate(model, params, t0=200.0, t_end=400.0, dt=10.0, save_at=ts[2:], c0=a.final)
    np.testing.assert_allclose(np.concatenate([a.ys, b.ys]), one.ys, rtol=1e-12, atol=1e-14)
    with pytest.raises(ValueError, match=r"save_at contains 100.0; allowed: times in \(200, t_end = 400\] s"):
        solver.simulate(model, params, t0=200.0, t_end=400.0, dt=10.0, save_at=[100.0, 400.0])
