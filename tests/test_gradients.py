"""Reverse-mode gradients through simulate against central finite differences (float64)."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from paracrine import geometry
from paracrine import solver

T, DT = 6.0, 0.25


def setup(kind):
    regions = {"remote": True, "border": geometry.halfspace(0, 0.5)}
    geo = geometry.box_grid([0, 0], [1, 1], 10, regions=regions) if kind == "grid" else \
        geometry.box_mesh([0, 0], [1, 1], 6, regions=regions)
    disc = geometry.discretise(geo)
    model = solver.Model(disc, factors=["VEGF", "HGF"], sources=[solver.point_source(disc, [[0.4, 0.45]])])
    params = model.params(D=[[4e-3, 2e-3], [1e-3, 3e-3]], decay=[0.05, 0.1], uptake=[[0.0, 0.2], [0.05, 0.0]],
                          sources=[solver.Exponential(rate=[2.0, 1.0], k=0.2, start=0.5)])
    probe = disc.locate([[0.6, 0.5]])
    return disc, model, params, probe


def loss_fn(model, stepper, probe, dt=DT):
    nodes, w = (jnp.asarray(a) for a in probe)

    def observe(c, t):
        flat = c.reshape(c.shape[0], -1)
        return jnp.stack([model.total(c), flat[:, nodes[0]] @ w[0]])

    def loss(params):
        sol = solver.simulate(model, params, t_end=T, dt=dt, save_at=[2.0, 4.0, 6.0], method=stepper, observe=observe)
        return jnp.sum(sol.ys[:, 0] * jnp.array([1.0, 0.5])) + 10 * jnp.sum(sol.ys[:, 1])

    return loss


PATHS = {
    "D[VEGF, border]": lambda p: p.D[0, 1],
    "D[HGF, remote]": lambda p: p.D[1, 0],
    "decay[VEGF]": lambda p: p.decay[0],
    "uptake[VEGF, border]": lambda p: p.uptake[0, 1],
    "source rate[HGF]": lambda p: p.sources[0].rate[1],
    "source k": lambda p: p.sources[0].k,
}


def perturbed(params, path, delta):
    leaf = PATHS[path]
    getter = {
        "D[VEGF, border]": (lambda p: p.D, (0, 1)), "D[HGF, remote]": (lambda p: p.D, (1, 0)),
        "decay[VEGF]": (lambda p: p.decay, (0,)), "uptake[VEGF, border]": (lambda p: p.uptake, (0, 1)),
        "source rate[HGF]": (lambda p: p.sources[0].rate, (1,)), "source k": (lambda p: p.sources[0].k, ()),
    }[path]
    where, idx = getter
    arr = where(params)
    return eqx.tree_at(where, params, arr.at[idx].add(delta)), float(leaf(params))


@pytest.mark.parametrize("kind", ["grid", "mesh"])
@pytest.mark.parametrize("method", ["euler", "rkl2", "cn"])
def test_gradient_matches_central_differences(kind, method):
    disc, model, params, probe = setup(kind)
    dt_limit = 2.0 / float(jnp.max(solver.spectral_bound(model, params)))
    dt = min(DT, 0.9 * dt_limit) if method == "euler" else DT
    stepper = solver.plan(model, params, dt=dt * 1.5, method=method)  # margin for perturbed D
    loss = loss_fn(model, stepper, probe, dt)
    grads = jax.grad(loss)(params)
    for path, leaf in PATHS.items():
        value = float(leaf(params))
        eps = 1e-5 * abs(value)
        fp, _ = perturbed(params, path, eps)
        fm, _ = perturbed(params, path, -eps)
        fd = (float(loss(fp)) - float(loss(fm))) / (2 * eps)
        ad = float(leaf(grads))
        assert ad == pytest.approx(fd, rel=2e-5, abs=1e-9 * abs(float(loss(params)))), path


def test_forward_mode_equals_reverse_mode():
    disc, model, params, probe = setup("mesh")
    stepper = solver.plan(model, params, dt=DT, method="rkl2")
    loss = loss_fn(model, stepper, probe)
    rev = jax.grad(loss)(params)
    fwd = jax.jacfwd(loss)(params)
    for a, b in zip(jax.tree.leaves(rev), jax.tree.leaves(fwd)):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-14)


def test_steady_state_gradient_matches_finite_differences():
    disc, model, params, probe = setup("grid")

    def f(p):
        ss = solver.steady_state(model, p)
        return jnp.sum(ss.c ** 2)

    g = jax.grad(f)(params)
    for path in ["D[VEGF, border]", "decay[VEGF]", "source rate[HGF]"]:
        value = float(PATHS[path](params))
        eps = 1e-5 * value
        fd = (float(f(perturbed(params, path, eps)[0])) - float(f(perturbed(params, path, -eps)[0]))) / (2 * eps)
        assert float(PATHS[path](g)) == pytest.approx(fd, rel=1e-5), path
