"""Operators: harmonic-mean faces, zero flux to non-tissue, mesh layouts agree, RKL2 stability polynomial."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from paracrine import geometry
from paracrine import solver


def test_grid_faces_use_the_harmonic_mean_and_close_non_tissue():
    g = geometry.box_grid([0, 0], [1.0, 0.5], [4, 2], regions={"a": True, "b": geometry.halfspace(0, 0.5)},
                          mask=lambda x: ~((x[..., 0] > 0.75) & (x[..., 1] > 0.25)))
    model = solver.Model(geometry.discretise(g))
    D1, D2 = 2.0, 0.5
    gx, gy = model.space.conductances(jnp.array([[D1, D2]])).faces
    h = 0.25
    np.testing.assert_allclose(gx[0, 0, 0], D1 / h ** 2)                           # inside region a
    np.testing.assert_allclose(gx[0, 1, 0], 2 * D1 * D2 / (D1 + D2) / h ** 2)       # a | b interface
    np.testing.assert_allclose(gx[0, 2, 1], 0.0)                                    # to the non-tissue voxel
    np.testing.assert_allclose(gy[0, 3, 0], 0.0)


def test_heterogeneous_grid_path_equals_homogeneous_path(rng):
    full = geometry.discretise(geometry.box_grid([0, 0, 0], [1, 1, 1], 6))
    split = geometry.discretise(geometry.box_grid([0, 0, 0], [1, 1, 1], 6,
                                                  regions={"a": True, "b": geometry.halfspace(2, 0.5)}))
    assert full.homogeneous and not split.homogeneous
    c = jnp.asarray(rng.uniform(size=(2, 6, 6, 6)))
    m1, m2 = solver.Model(full, factors=["x", "y"]), solver.Model(split, factors=["x", "y"])
    D = jnp.array([[0.3], [0.7]])
    a = m1.space.apply(c, m1.space.conductances(D))
    b = m2.space.apply(c, m2.space.conductances(jnp.broadcast_to(D, (2, 2))))
    np.testing.assert_allclose(a, b, rtol=1e-13)


def test_grid_operator_is_symmetric_and_conservative(rng):
    g = geometry.box_grid([0, 0], [1, 1], 7, regions={"a": True, "b": geometry.halfspace(1, 0.4)},
                          mask=lambda x: np.hypot(x[..., 0] - 0.5, x[..., 1] - 0.5) < 0.45)
    model = solver.Model(geometry.discretise(g))
    sp = model.space
    gg = sp.conductances(jnp.array([[1.0, 0.2]]))
    tissue = np.asarray(sp.tissue)
    u = jnp.asarray(rng.uniform(size=(1, 7, 7)) * tissue)
    v = jnp.asarray(rng.uniform(size=(1, 7, 7)) * tissue)
    np.testing.assert_allclose(jnp.vdot(u, sp.apply(v, gg)), jnp.vdot(sp.apply(u, gg), v), rtol=1e-12)
    assert abs(float(jnp.sum(sp.apply(u, gg)))) < 1e-12
    assert float(jnp.vdot(u, sp.apply(u, gg))) < 0


@pytest.mark.parametrize("dim", [2, 3])
def test_mesh_layouts_agree(dim, rng):
    mesh = geometry.box_mesh(np.zeros(dim), np.ones(dim), 4, regions={"a": True, "b": geometry.halfspace(0, 0.5)})
    disc = geometry.discretise(mesh)
    c = jnp.asarray(rng.uniform(size=(2, disc.n_nodes)))
    D = jnp.array([[1.0, 0.3], [0.2, 2.0]])
    out = []
    for layout in ("csr", "padded"):
        sp = solver.Model(disc, factors=["x", "y"], layout=layout).space
        g = sp.conductances(D)
        out.append((sp.apply(c, g), sp.rate_bound(g), sp.diagonal(g)))
    for a, b in zip(*out):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
    # and both equal -M^{-1} K c with K from the host assembly
    rows, cols, vals = disc.stiffness([1.0, 0.3])
    Kc = np.zeros(disc.n_nodes)
    np.add.at(Kc, rows, vals * np.asarray(c[0])[cols])
    np.testing.assert_allclose(out[0][0][0], -Kc / disc.mass, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("space", ["csr", "padded", "grid"])
def test_apply_transpose_is_jaxs_transpose_of_apply(space, rng):
    """The discrete adjoint applies L^T as m L(y / m) (L self-adjoint in the cg_mass inner product):
    equal to JAX's own transpose of `apply` in both mesh layouts and on a masked, heterogeneous grid,
    with every sink on (decay, uptake by region, Robin on meshes)."""
    import jax

    regions = {"a": True, "b": geometry.halfspace(0, 0.5)}
    if space == "grid":
        disc = geometry.discretise(geometry.box_grid([0, 0, 0], [1, 1, 1], 5, regions=regions,
                                                     mask=lambda x: x[..., 2] < 0.85))
        model = solver.Model(disc, factors=["x", "y"])
        extra = {}
    else:
        disc = geometry.discretise(geometry.box_mesh([0, 0, 0], [1, 1, 1], 4, regions=regions))
        model = solver.Model(disc, factors=["x", "y"], layout=space)
        extra = dict(robin={model.boundaries[0]: 0.3})
    p = model.params(D=[[0.05, 0.02], [0.01, 0.03]], decay=[0.01, 0.02], uptake=[[0.0, 0.1], [0.05, 0.0]], **extra)
    g = model.operator(p)
    sp = model.space
    shape = model.state_shape
    x = jnp.asarray(rng.uniform(size=shape))
    y = jnp.asarray(rng.uniform(size=shape))
    _, vjp = jax.vjp(lambda u: sp.apply(u, g), x)
    np.testing.assert_allclose(np.asarray(sp.apply_transpose(y, g)), np.asarray(vjp(y)[0]), rtol=1e-12,
                               atol=1e-12 * float(jnp.abs(vjp(y)[0]).max()))


def test_padded_layout_gathers_per_factor_past_the_int32_flat_index(rng, monkeypatch):
    """The padded layout indexes the field (S, N) flat in int32; where S * N would overflow it (a mesh of
    10^8 nodes with 22 factors) it gathers each factor on its own, with the same result (the threshold
    lowered here to take that path on a small mesh)."""
    import importlib

    space_mesh = importlib.import_module("paracrine.solver.space_mesh")
    disc = geometry.discretise(geometry.box_mesh([0, 0, 0], [1, 1, 1], 4))
    sp = solver.Model(disc, factors=["x", "y", "z"], layout="padded").space
    c = jnp.asarray(rng.uniform(size=(3, disc.n_nodes)))
    g = sp.conductances(jnp.array([[1.0], [0.3], [2.0]]))
    flat_index = f"[{3 * disc.n_nodes}]"      # the flattened field the flat gathers index
    assert flat_index in str(jax.make_jaxpr(sp.apply)(c, g))
    flat = np.asarray(sp.apply(c, g))
    monkeypatch.setattr(space_mesh, "FLAT_INDEX_MAX", disc.n_nodes)
    assert flat_index not in str(jax.make_jaxpr(sp.apply)(c, g))
    per_factor = np.asarray(sp.apply(c, g))
    np.testing.assert_allclose(per_factor, flat, rtol=1e-14, atol=1e-14)
    # one diffusivity row for all factors, as the flat path broadcasts it
    np.testing.assert_allclose(np.asarray(sp.apply(c, sp.conductances(jnp.array([[1.0]])))),
                               np.asarray(sp.apply(c, sp.conductances(jnp.ones((3, 1))))), rtol=1e-14, atol=1e-14)


@pytest.mark.parametrize("s", [2, 3, 5, 10, 33])
def test_rkl2_polynomial_is_stable_up_to_its_bound_and_second_order(s):
    """Apply one step to the scalar problem y' = z y: |R(z)| <= 1 on [-(s^2+s-2)/2, 0], R = e^z + O(z^3)."""
    rows, mut1 = solver.rkl2_coefficients(s)

    def R(z):
        y0 = 1.0
        y1, y2 = y0 + mut1 * z * y0, y0
        for mu, nu, mut, gt in rows:
            y1, y2 = mu * y1 + nu * y2 + (1 - mu - nu) * y0 + mut * z * y1 + gt * z * y0, y1
        return y1

    bound = (s * s + s - 2) / 2.0
    z = -np.linspace(0, bound, 2001)
    assert np.max(np.abs(R(z))) <= 1.0 + 1e-12
    zs = np.array([-1e-2, -5e-3])
    err = np.abs(R(zs) - np.exp(zs))
    assert np.log2(err[0] / err[1]) > 2.8
    assert solver.rkl2_stages(bound) == s and solver.rkl2_stages(bound * 1.001) == s + 1


def test_readme_example_runs():
    import re

    import jax
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    code = re.search(r"```python\n(.*?)```", text.split("## From Python", 1)[1], re.S).group(1)
    scope = {}
    exec(compile(code, "README.md", "exec"), scope)
    assert scope["sol"].ok
    assert np.all(np.isfinite(np.asarray(scope["grads"].D)))


@pytest.mark.parametrize("method", ["rkl2", pytest.param("trbdf2", marks=pytest.mark.slow)])
def test_padded_layout_derivatives_equal_csr(method, rng):
    """The slot-major padded layout gives the CSR layout's derivatives through whole runs: gradients
    w.r.t. the diffusivities and the initial field (RKL2; TR-BDF2 in the slow set, its padded
    gathers' derivative being the same), jacfwd equal to jacrev, and second derivatives (jax.hessian
    w.r.t. D with RKL2, which a hand-given transpose once got wrong)."""
    import jax

    mesh = geometry.box_mesh([0, 0, 0], [1, 1, 1], 4, regions={"a": True, "b": geometry.halfspace(0, 0.5)})
    disc = geometry.discretise(mesh)
    c0 = jnp.asarray(rng.uniform(size=(2, disc.n_nodes)))
    D = jnp.array([[0.05, 0.02], [0.01, 0.03]])
    out = {}
    for layout in ("csr", "padded"):
        model = solver.Model(disc, factors=["x", "y"], layout=layout)

        def loss(D, c0, method):
            p = model.params(D=D, decay=[0.01, 0.02], uptake=[[0.0, 0.1], [0.05, 0.0]],
                             robin={model.boundaries[0]: 0.01})
            sol = solver.simulate(model, p, t_end=3.0, dt=0.5, method=method, c0=c0, save_at=[1.0, 3.0])
            return jnp.sum(sol.ys ** 2 * jnp.linspace(0.5, 1.5, sol.ys.size).reshape(sol.ys.shape))

        st = solver.RKL2(s=6) if method == "rkl2" else solver.TRBDF2(tol=1e-13)
        gD, gc = jax.grad(loss, argnums=(0, 1))(D, c0, st)
        fD = jax.jacfwd(loss)(D, c0, st)
        np.testing.assert_allclose(np.asarray(fD), np.asarray(gD), rtol=1e-9)
        out[layout, "grad"] = (np.asarray(gD), np.asarray(gc))
        if method == "rkl2":
            out[layout, "hessian"] = (np.asarray(jax.hessian(loss)(D, c0, st)),)
    for name in ("grad",) + (("hessian",) if method == "rkl2" else ()):
        for a, b in zip(out["padded", name], out["csr", name]):
            np.testing.assert_allclose(a, b, rtol=1e-11, atol=1e-14 * np.abs(b).max())
