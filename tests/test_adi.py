"""Douglas ADI on voxel grids (float64): temporal order, exact fixed point, mass balance, several
factors, vmap, gradients, and the refusal of meshes."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from paracrine import geometry
from paracrine import solver
from helpers import cosine_mode, slope

D, K, T = 0.01, 0.05, 2.0
DTS = [0.5, 0.25, 0.125, 0.0625]


def rel_l2(a, b):
    a, b = np.asarray(a).ravel(), np.asarray(b).ravel()
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def box(upper, n, **kw):
    dim = len(upper)
    return geometry.discretise(geometry.box_grid(np.zeros(dim), np.asarray(upper, float), n, **kw))


def cosine_errors(upper, n, dts):
    """Errors at T of the V1 cosine mode (slowest zero-flux mode of the box) against the exact
    semi-discrete solution: it is an eigenvector of the grid operator, so only time errors remain."""
    disc = box(upper, n)
    model = solver.Model(disc)
    c0 = cosine_mode(disc.coordinates, 0.0, np.asarray(upper, float)).reshape(model.state_shape)
    lam = sum(2 * D / h ** 2 * (1 - np.cos(np.pi * h / L)) for h, L in zip(disc.grid.spacing, upper))
    exact = c0 * np.exp(-(lam + K) * T)
    params = model.params(D=D, decay=K)
    return [rel_l2(solver.simulate(model, params, t_end=T, dt=dt, method="adi", c0=c0, positive=False).final, exact)
            for dt in dts]


@pytest.mark.parametrize("upper,n", [((1.0, 1.0), 32), ((1.0, 1.5, 2.0), 16)])
def test_temporal_order_on_the_cosine_mode(upper, n):
    # 3-D on a box with unequal sides: on the cube the three axis eigenvalues of the mode are equal
    # and Douglas happens to be third-order accurate for it (below)
    errs = cosine_errors(upper, n, DTS)
    p = slope(DTS, errs)
    assert abs(p - 2) <= 0.2, f"order {p:.2f}, errors {errs}"


def test_cube_cosine_mode_is_third_order_by_symmetry():
    """With equal z = h lambda_a on the three axes the amplification 1 + 3z/(1 - z/2)^3 matches exp(3z)
    to z^3: V5 (the cube's cosine mode) flatters the scheme."""
    errs = cosine_errors((1.0, 1.0, 1.0), 16, DTS)
    assert slope(DTS, errs) > 2.8, errs


def masked(dim, n):
    """A ball of tissue cut by the box, two regions (different D and uptake): every path of the
    stepper (conductances and sink per voxel, zero faces next to non-tissue voxels)."""
    centre = np.full(dim, 0.4)
    return geometry.discretise(geometry.box_grid(
        [0.0] * dim, [1.0] * dim, n, regions={"remote": True, "border": geometry.halfspace(0, 0.5)},
        mask=lambda x: np.linalg.norm(x - centre, axis=-1) < 0.6))


def bump(disc):
    """1 + the cosine mode on the tissue voxels, 0 elsewhere, shaped (1, *grid)."""
    values = (1 + cosine_mode(disc.coordinates, 0.0, 1.0)).reshape(disc.grid.shape)
    return np.where(np.asarray(disc.region_index) >= 0, values, 0.0)[None]


def source_model(disc, factors=("a",)):
    site = [[0.35] * disc.dim]
    return solver.Model(disc, factors=list(factors), sources=[solver.point_source(disc, site)])


def test_temporal_order_masked_heterogeneous_with_a_decaying_source():
    disc = masked(2, 24)
    model = source_model(disc)
    params = model.params(D=[[D, 3 * D]], decay=K, uptake=[[0.0, 0.4]], sources=[solver.Exponential(rate=0.05, k=0.3)])
    c0 = bump(disc)
    ref = solver.simulate(model, params, t_end=T, dt=T / 1024, method="trbdf2", c0=c0).final
    errs = [rel_l2(solver.simulate(model, params, t_end=T, dt=dt, method="adi", c0=c0).final, ref) for dt in DTS]
    p = slope(DTS, errs)
    assert abs(p - 2) <= 0.2, f"order {p:.2f}, errors {errs}"


@pytest.mark.parametrize("kind", ["homogeneous", "masked"])
def test_steady_state_is_a_fixed_point(kind):
    disc = box((1.0, 1.0, 1.0), 12) if kind == "homogeneous" else masked(3, 12)
    model = source_model(disc, factors=("a", "b"))
    uptake = 0.2 if kind == "homogeneous" else [[0.0, 0.4]]
    params = model.params(D=[[D], [2 * D]] if kind == "homogeneous" else [[D, 3 * D], [2 * D, D]], decay=[K, 2 * K],
                          uptake=uptake, sources=[solver.Constant(rate=[1.0, 0.5])])
    ss = solver.steady_state(model, params, tol=1e-13)
    assert bool(ss.converged)
    rho = float(jnp.max(solver.spectral_bound(model, params)))
    dt = 1000 * 2 / rho                       # 1000x forward Euler's limit
    sol = solver.simulate(model, params, t_end=20 * dt, dt=dt, method="adi", c0=ss.c)
    assert rel_l2(sol.final, ss.c) < 1e-9
    # exactly: a field with L c + f = 0 (f := -L c) is returned bit for bit
    space, g = model.space, model.operator(params)
    c = jnp.asarray(ss.c)
    f = -space.apply(c, g)
    new, its, ok = solver.DouglasADI().diffuse(space, g, c, dt, f)
    assert np.array_equal(np.asarray(new), np.asarray(c)) and bool(ok) and int(its) == 0


@pytest.mark.parametrize("kind", ["homogeneous", "masked"])
def test_mass_balance_with_a_source_and_no_losses(kind):
    disc = box((1.0, 1.0, 1.0), 10) if kind == "homogeneous" else masked(3, 10)
    model = source_model(disc)
    params = model.params(D=D if kind == "homogeneous" else [[D, 4 * D]], sources=[solver.Exponential(rate=2.0, k=0.5)])
    rng = np.random.default_rng(0)
    c0 = np.where(np.asarray(disc.region_index) >= 0, rng.uniform(size=disc.grid.shape), 0.0)[None]
    sol = solver.simulate(model, params, t_end=4.0, dt=0.5, method="adi", c0=c0, budget=True)
    injected = 2.0 * (1 - np.exp(-0.5 * 4.0)) / 0.5
    total0, total = float(model.total(jnp.asarray(c0))[0]), float(model.total(sol.final)[0])
    assert abs(float(sol.budget["secreted"][0]) - injected) < 1e-12 * injected
    assert abs(total - total0 - injected) < 1e-12 * (total0 + injected)


def test_factors_batched_or_looped_and_vmap_equal_a_loop():
    disc = masked(2, 16)
    model = source_model(disc, factors=("a", "b", "c"))
    c0 = np.concatenate([bump(disc)] * 3)

    def run(d, loop=None):
        params = model.params(D=[[d, 2 * d], [2 * d, d], [d, d]], decay=[K, 0.0, 2 * K], uptake=[[0.0, 0.3]],
                              sources=[solver.Constant(rate=[1.0, 0.0, 2.0])])
        return solver.simulate(model, params, t_end=2.0, dt=0.25, method=solver.DouglasADI(), c0=c0,
                               factor_loop=loop).final

    looped, batched = run(D, True), run(D, False)
    np.testing.assert_allclose(looped, batched, rtol=1e-13, atol=1e-15)
    Ds = jnp.array([0.5 * D, D, 2 * D])
    mapped = jax.jit(jax.vmap(run))(Ds)
    for k, d in enumerate(Ds):
        np.testing.assert_allclose(mapped[k], run(d), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("kind", ["homogeneous", "masked"])
def test_gradient_matches_central_differences(kind):
    disc = box((1.0, 1.0), 12) if kind == "homogeneous" else masked(2, 12)
    model = source_model(disc)
    c0 = bump(disc)

    def loss(theta):
        d, k, q = theta[0], theta[1], theta[2]
        D_ = d if kind == "homogeneous" else jnp.stack([d, 3 * d])[None]
        params = model.params(D=D_, decay=k, sources=[solver.Constant(rate=q)])
        sol = solver.simulate(model, params, t_end=2.0, dt=0.25, method=solver.DouglasADI(), c0=c0)
        return jnp.sum(sol.final ** 2 * jnp.linspace(0.5, 1.5, sol.final.size).reshape(sol.final.shape))

    theta = jnp.array([D, K, 0.3])
    grad = jax.grad(loss)(theta)
    eps = 1e-6 * theta
    fd = jnp.array([(loss(theta.at[i].add(eps[i])) - loss(theta.at[i].add(-eps[i]))) / (2 * eps[i]) for i in range(3)])
    np.testing.assert_allclose(grad, fd, rtol=1e-6)
    if kind == "homogeneous":
        # forward mode agrees (on masked grids the harmonic-mean conductances of two non-tissue
        # voxels, 0 / tiny, have a NaN tangent: a property of GridSpace.conductances, not of the stepper)
        np.testing.assert_allclose(jax.jacfwd(loss)(theta), grad, rtol=1e-10)


def dense_douglas(space, g, c, h, f):
    """The Douglas step with dense matrices: A_a from the operator with only axis a's faces and
    sink / d, applied to unit fields."""
    shape, n = c.shape, c.size
    nd = len(space.shape)
    eye = jnp.eye(n).reshape((n,) + shape)

    def matrix(op):
        return np.stack([np.asarray(space.apply(e, op)).ravel() for e in eye], axis=1)

    z = h * np.asarray(space.apply(c, g) + f).ravel()
    for a in range(nd):
        faces = tuple(ga if b == a else jnp.zeros_like(ga) for b, ga in enumerate(g.faces))
        A = matrix(solver.operators.GridOperator(faces, None if g.sink is None else g.sink / nd))
        z = np.linalg.solve(np.eye(n) - 0.5 * h * A, z)
    return np.asarray(c).ravel() + z


@pytest.mark.parametrize("dim", [2, 3])
@pytest.mark.parametrize("kind", ["homogeneous", "constant sink", "sink field", "masked"])
def test_step_equals_the_dense_douglas_step(dim, kind, rng):
    shape = (5, 7) if dim == 2 else (3, 4, 5)
    upper = np.array(shape, float) / 5.0
    if kind == "masked":
        disc = geometry.discretise(geometry.box_grid(
            np.zeros(dim), upper, shape, regions={"remote": True, "border": geometry.halfspace(0, 0.5)},
            mask=lambda x: np.linalg.norm(x - 0.3, axis=-1) < 0.8))
    else:
        disc = box(upper, shape)
    S = 2
    model = solver.Model(disc, factors=["a", "b"])
    space = model.space
    g = space.conductances(jnp.asarray(rng.uniform(0.5, 2.0, (S, model.n_regions))))
    if kind == "constant sink":
        g = g.with_sink(jnp.asarray([0.3, 1.5]).reshape((S,) + (1,) * dim))
    elif kind in ("sink field", "masked"):
        g = g.with_sink(jnp.asarray(rng.uniform(0.0, 2.0, (S,) + shape)))
    c = jnp.asarray(rng.uniform(size=(S,) + shape))
    f = jnp.asarray(rng.uniform(size=(S,) + shape))
    h = 0.7
    new, _, _ = eqx.filter_jit(solver.DouglasADI().diffuse)(space, g, c, h, f)
    for s in range(S):
        one = jax.tree.map(lambda x: x[s:s + 1] if x.ndim and x.shape[0] == S else x, g)
        np.testing.assert_allclose(np.asarray(new[s]).ravel(), dense_douglas(space, one, c[s:s + 1], h, f[s:s + 1]),
                                   rtol=1e-12, atol=1e-12)


def test_mesh_is_refused():
    disc = geometry.discretise(geometry.box_mesh([0, 0], [1, 1], 4))
    model = solver.Model(disc)
    with pytest.raises(ValueError, match=r"DouglasADI.*voxel grid.*trbdf2"):
        solver.simulate(model, model.params(D=D), t_end=1.0, dt=0.5, method="adi")


def test_registered():
    assert solver.steppers.METHODS["adi"] is solver.DouglasADI
    assert solver.DouglasADI().order == 2 and np.isinf(float(solver.DouglasADI().limit(jnp.asarray(1.0))))


@pytest.mark.parametrize("decay", [0.0, K])
def test_dense_inverse_path_equals_the_tridiagonal_recurrence(decay, monkeypatch):
    """Line-invariant axes up to adi.DENSE_MAX are solved by the product with the inverse; the same
    step through LAPACK's tridiagonal solver agrees to round-off, and without a sink the dense path
    keeps the total (its inverse's columns summed to 1)."""
    from paracrine.solver import adi

    disc = box((1.0, 1.5, 2.0), (12, 10, 8))
    model = solver.Model(disc, factors=("a", "b"))
    params = model.params(D=[D, 3 * D], decay=decay)
    c0 = np.random.default_rng(3).uniform(size=model.state_shape)
    jax.clear_caches()                       # no program traced under another DENSE_MAX
    dense = np.asarray(solver.simulate(model, params, t_end=20.0, dt=2.0, method="adi", c0=c0).final)
    monkeypatch.setattr(adi, "DENSE_MAX", 0)
    jax.clear_caches()                       # the compiled step read DENSE_MAX when it was traced
    tri = np.asarray(solver.simulate(model, params, t_end=20.0, dt=2.0, method="adi", c0=c0).final)
    np.testing.assert_allclose(dense, tri, rtol=1e-12, atol=1e-14)
    jax.clear_caches()                       # leave no program traced under DENSE_MAX = 0
    assert not np.array_equal(dense, tri)    # two different computations
    if decay == 0.0:
        np.testing.assert_allclose(dense.sum(axis=(1, 2, 3)), c0.sum(axis=(1, 2, 3)), rtol=1e-13)


def test_dense_inverse_keeps_the_total_in_float32():
    disc = box((1.0, 1.0, 1.0), 20)
    model = solver.Model(disc, dtype=jnp.float32)
    params = model.params(D=jnp.float32(D))
    params = jax.tree_util.tree_map(lambda x: x.astype(jnp.float32) if eqx.is_inexact_array(x) else x, params)
    c0 = np.random.default_rng(4).uniform(size=model.state_shape).astype(np.float32)
    sol = solver.simulate(model, params, t_end=2000.0, dt=1.0, method="adi", c0=jnp.asarray(c0))
    total = float(np.asarray(sol.final, np.float64).sum())
    assert abs(total / float(c0.astype(np.float64).sum()) - 1) < 1e-5


@pytest.mark.parametrize("n", [1, 2, 7, 100])
def test_line_inverse_from_the_dct_basis_equals_the_dense_inverse(n):
    """The line matrices' inverses built from their eigenvectors (DCT-II) equal NumPy's inverse of the
    assembled zero-flux tridiagonal matrix, with and without a sink, per factor."""
    from paracrine.solver import adi

    alpha = np.array([[0.3], [250.0]])
    beta = np.array([[0.0], [0.7]])
    got = np.asarray(adi._line_inverse(n, jnp.asarray(alpha), jnp.asarray(beta), jnp.float64))
    for s in range(2):
        lap = -2.0 * np.eye(n) + np.eye(n, k=1) + np.eye(n, k=-1)
        lap[0, 0] += 1.0
        lap[-1, -1] += 1.0
        T = np.eye(n) - alpha[s, 0] * lap + beta[s, 0] * np.eye(n)
        np.testing.assert_allclose(got[s], np.linalg.inv(T), rtol=1e-10, atol=1e-13)
    no_sink = np.asarray(adi._line_inverse(n, jnp.asarray(alpha), None, jnp.float64))
    np.testing.assert_allclose(no_sink.sum(axis=1), 1.0, rtol=1e-12)
