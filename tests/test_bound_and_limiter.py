"""The step bound counts every sink in the operator; the limiter never flips a sign; no retracing
when leaves change type; a step at the explicit limit is accepted."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from paracrine import geometry
from paracrine import solver
from paracrine.solver.simulate import positivity_limiter


def _assembled(model, params):
    """-L = M^{-1} (K + R) as a dense matrix (the operator the diffusion stepper integrates)."""
    g = model.operator(params)
    n = int(np.prod(model.space.shape))
    eye = jnp.eye(n).reshape((n, 1) + tuple(model.space.shape))
    cols = jax.vmap(lambda e: model.space.apply(e, g))(eye)  # (n, 1, *shape): L e_j
    return -np.asarray(cols).reshape(n, n).T


def _largest_eigenvalue(model, params):
    A = _assembled(model, params)
    m = np.asarray(model.space.mass(jnp.float64)) * np.ones(model.space.shape)
    m = m.reshape(-1)
    keep = m > 0
    A, m = A[np.ix_(keep, keep)], m[keep]
    sym = np.sqrt(m)[:, None] * A / np.sqrt(m)[None, :]   # M^{1/2} (-L) M^{-1/2} is symmetric
    assert np.allclose(sym, sym.T, atol=1e-9 * np.abs(sym).max())
    return float(np.linalg.eigvalsh(0.5 * (sym + sym.T)).max())


SINKS = dict(decay=0.01, uptake=[[0.0, 0.02]], clearance=[[0.03, 0.01]])


@pytest.mark.parametrize("dim", [2, 3])
def test_bound_covers_the_assembled_operator_with_robin(dim):
    n = [6, 3] if dim == 2 else [4, 3, 3]
    upper = [1.0, 0.4] if dim == 2 else [1.0, 0.6, 0.6]
    mesh = geometry.box_mesh([0] * dim, upper, n, regions={"remote": True, "border": geometry.halfspace(0, 0.5)})
    model = solver.Model(geometry.discretise(mesh))
    # strong Robin on two faces, every other sink on too
    params = model.params(D=[[1e-2, 3e-3]], robin={"xmax": 0.5, "xmin": 0.2}, **SINKS)
    lam = _largest_eigenvalue(model, params)
    bound = float(solver.spectral_bound(model, params)[0])
    assert bound >= lam * (1 - 1e-12)
    # the Robin term matters: the diffusion-only bound (the old one) is below the true radius
    no_robin = float(model.space.rate_bound(model.space.conductances(params.D))[0])
    assert no_robin < lam


@pytest.mark.parametrize("sinks", ["decay", "decay and uptake by region"])
def test_grid_bound_of_a_homogeneous_grid_forms_no_field(sinks):
    """On a homogeneous grid the operator is (S,) conductances and an (S, 1, 1, 1) sink: the bound is
    their sum per factor, computed without an (S, *grid) array (a reduction over the sink broadcast to
    the grid took 24 ms per call at 10 factors on 100^3), and it equals the bound of that broadcast."""
    disc = geometry.discretise(geometry.box_grid([0, 0, 0], [1, 1, 1], 12))
    model = solver.Model(disc, factors=["a", "b", "c"])
    extra = dict(uptake=[[0.02], [0.0], [0.05]]) if "uptake" in sinks else {}
    params = model.params(D=[[1e-2], [3e-3], [5e-3]], decay=[0.01, 0.2, 0.03], **extra)
    g = model.operator(params)
    assert g.sink.shape == (3, 1, 1, 1)
    full = type(g)(g.faces, jnp.broadcast_to(g.sink, (3, 12, 12, 12)))
    np.testing.assert_allclose(np.asarray(model.space.rate_bound(g)), np.asarray(model.space.rate_bound(full)),
                               rtol=1e-14)
    hlo = jax.jit(lambda op: model.space.rate_bound(op)).lower(g).compile().as_text()
    assert "12,12,12]" not in hlo and "1728]" not in hlo   # neither the grid nor its flattening


def test_bound_covers_the_assembled_grid_operator():
    disc = geometry.discretise(geometry.box_grid([0, 0, 0], [1, 1, 1], 5, regions={
        "remote": True, "border": geometry.halfspace(0, 0.5)}, mask=lambda x: x[..., 2] < 0.85))
    model = solver.Model(disc)
    params = model.params(D=[[1e-2, 3e-3]], **SINKS)
    assert float(solver.spectral_bound(model, params)[0]) >= _largest_eigenvalue(model, params) * (1 - 1e-12)


def _slab():
    mesh = geometry.box_mesh([0, 0], [1, 0.25], [12, 3])
    disc = geometry.discretise(mesh)
    return solver.Model(disc, sources=[solver.point_source(disc, [[0.5, 0.1]])])


def test_plan_includes_robin_so_the_run_is_stable():
    """A slab with strong Robin sinks: the plan must give as many RKL2 stages as the run needs."""
    model = _slab()
    params = model.params(D=1e-2, robin={"xmax": 5.0, "xmin": 5.0}, sources=[solver.Constant(rate=1.0)])
    stepper = solver.plan(model, params, dt=0.5)
    lam = _largest_eigenvalue(model, params)
    assert stepper.s >= solver.rkl2_stages(0.5 * lam)
    sol = solver.simulate(model, params, t_end=20.0, dt=0.5, method=stepper)
    assert sol.ok, sol.message
    assert np.all(np.isfinite(sol.final)) and float(sol.final.min()) >= 0
    with pytest.raises(solver.StabilityError, match="largest stable dt"):
        solver.simulate(model, params, t_end=1.0, dt=0.5, method="euler")
    dt_max = 2.0 / float(solver.spectral_bound(model, params)[0])
    sol = solver.simulate(model, params, t_end=20 * dt_max, dt=dt_max, method="euler")  # exactly at the limit
    assert sol.ok, sol.message


def test_limiter_never_flips_sign_nor_creates_mass():
    model = _slab()
    space = model.space
    rng = np.random.default_rng(3)
    n = space.shape[0]
    for _ in range(50):
        c = rng.normal(size=(2, n)) + rng.uniform(-1.5, 1.5, size=(2, 1))
        out, clipped, failed = positivity_limiter(space, jnp.asarray(c))
        out = np.asarray(out)
        total_in, total_out = np.asarray(space.total(jnp.asarray(c))), np.asarray(space.total(jnp.asarray(out)))
        assert out.min() >= 0
        assert np.all(out[c <= 0] == 0)                      # nothing negative or zero becomes positive
        assert np.all(total_out <= np.maximum(total_in, 0) * (1 + 1e-12) + 1e-15)
        np.testing.assert_array_equal(np.asarray(failed), total_in < 0)
        ok = total_in >= 0
        np.testing.assert_allclose(total_out[ok], total_in[ok], rtol=1e-12)
        assert np.all(total_out[~ok] == 0)
    # an identity on non-negative data
    c = jnp.asarray(rng.uniform(0, 1, (1, n)))
    out, clipped, failed = positivity_limiter(space, c)
    np.testing.assert_array_equal(np.asarray(out), np.asarray(c))
    assert float(clipped[0]) == 0 and not bool(failed[0])


def _tet_box():
    mesh = geometry.box_mesh([0, 0, 0], [1, 0.5, 0.5], [6, 3, 3], regions={"remote": True,
                                                                           "core": geometry.halfspace(0, 0.6)})
    disc = geometry.discretise(mesh)
    return disc, solver.Model(disc, sources=[solver.point_source(disc, [[0.3, 0.25, 0.25]])])


@pytest.mark.parametrize("method", ["cn", "rkl2"])
def test_strong_robin_ends_non_negative_or_failed(method):
    """Robin 100x a plausible coefficient (1e-2 mm/s), random D, sinks and steps: every run ends with
    finite values >= 0, or with a failure status the caller sees (never a 'success' with negatives)."""
    disc, model = _tet_box()
    rng = np.random.default_rng(11 if method == "cn" else 12)
    failures = 0
    for _ in range(8):
        D = 10 ** rng.uniform(-4, -1, size=(1, 2))
        params = model.params(D=D, decay=10 ** rng.uniform(-6, -2), uptake=[[0.0, 10 ** rng.uniform(-6, -2)]],
                              robin={b: 10 ** rng.uniform(-1, 0) for b in ("xmin", "xmax", "zmax")},
                              sources=[solver.Constant(rate=10 ** rng.uniform(-2, 2), stop=5.0)])
        c0 = rng.uniform(0, 1, model.state_shape)
        dt = float(rng.choice([0.5, 2.0, 10.0]))
        sol = solver.simulate(model, params, t_end=20.0, dt=dt, save_at=[5.0, 20.0], method=method, c0=c0)
        ys = np.asarray(sol.ys)
        if sol.ok:
            assert np.all(np.isfinite(ys)) and ys.min() >= 0, (D, dt)
        else:
            failures += 1
            assert "negative total" in sol.message or "non-finite" in sol.message
    if method == "rkl2":
        assert failures == 0


def test_cn_strong_robin_negative_total_is_a_failed_step():
    """CN is not L-stable: with beta h / (D m) >> 1 a boundary node's amplification tends to -1, so a
    field next to a strong sink comes out with a negative total. That must be reported, not rescaled."""
    model = _slab()
    params = model.params(D=1e-2, robin={"xmax": 50.0, "xmin": 50.0}, sources=[solver.Constant(rate=0.0)])
    c0 = np.zeros(model.state_shape)
    x = np.asarray(model.space.boundary_weights)  # nodes on a Robin face carry boundary area
    c0[0, x[:, [model.boundaries.index("xmin"), model.boundaries.index("xmax")]].sum(axis=1) > 0] = 1.0
    sol = solver.simulate(model, params, t_end=10.0, dt=10.0, method="cn", c0=c0)
    final = np.asarray(sol.final)
    assert final.min() >= 0
    assert not sol.ok and "negative total" in sol.message


def test_no_retrace_when_leaves_change_type():
    disc, model = _tet_box()
    stepper = solver.RKL2(s=3)
    before = solver.simulate.__globals__["TRACE_COUNT"]["RKL2"]
    for D, decay, rate in ((1e-3, 1e-3, 1.0), (np.float64(2e-3), np.float32(1e-3), np.float64(2.0)),
                           (jnp.asarray(1e-3), np.asarray(2e-3), jnp.asarray(3.0, jnp.float32))):
        params = model.params(D=D, decay=decay, sources=[solver.Constant(rate=rate, start=0.0)])
        solver.simulate(model, params, t_end=1.0, dt=0.5, method=stepper)
    assert solver.simulate.__globals__["TRACE_COUNT"]["RKL2"] - before == 1


def test_rkl2_stage_count_at_the_limit():
    for s in range(2, 40):
        edge = (s * s + s - 2) / 2
        assert solver.rkl2_stages(edge) == s
        assert solver.rkl2_stages(edge * (1 + 1e-9)) == s      # rounding at the limit
        assert solver.rkl2_stages(edge * (1 + 1e-4)) == s + 1


def test_default_scenario_with_robin_runs_with_every_stepper():
    """The default scenario with robin = { endo = "1e-2 mm/s" } on VEGF: the old bound (diffusion
    only, 0.059 /s against 0.24 /s) planned 3 RKL2 stages where 6 are needed and the run went non-finite."""
    from paracrine import scenario as sc
    from paracrine.build import build

    text = sc.default_text().replace("[factors.VEGF]", '[factors.VEGF]\nrobin = { endo = "1e-2 mm/s" }', 1)
    built = build(sc.loads(text))
    model, params = built.model, built.params
    rho = float(jnp.max(solver.spectral_bound(model, params)))
    assert rho > 0.2
    for method, dt in (("rkl2", 60.0), ("cn", 60.0), ("euler", 2.0 / rho)):
        stepper = solver.plan(model, params, dt=dt, method=method)
        if method == "rkl2":
            assert stepper.s >= 6
        sol = solver.simulate(model, params, t_end=2 * 3600.0, dt=dt, method=stepper, budget=True)
        assert sol.ok, (method, sol.message)
        final = np.asarray(sol.final)
        assert np.all(np.isfinite(final)) and final.min() >= 0 and final.max() > 0
        assert float(sol.budget["to_boundary"][0]) > 0
