"""Stepper wrappers: Positive (the limiter) and PerFactor (one factor after another) compose around any
scheme and do exactly what the simulate flags did."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from paracrine import geometry
from paracrine import solver

jax.config.update("jax_enable_x64", True)


def two_factors():
    """Two factors next to a point source, steps long enough that RKL2 undershoots (the limiter acts)."""
    mesh = geometry.box_mesh([0, 0], [1, 1], 12)
    disc = geometry.discretise(mesh)
    model = solver.Model(disc, factors=("A", "B"), sources=[solver.point_source(disc, [[0.4, 0.6]])])
    params = model.params(D=[3e-3, 1e-3], decay=[1e-3, 2e-3], sources=[solver.Constant(rate=[1.0, 2.0])])
    return model, params


@pytest.mark.parametrize("scheme", [solver.RKL2, solver.CrankNicolson, solver.TRBDF2])
def test_wrappers_equal_the_flags(scheme):
    model, params = two_factors()
    kw = dict(t_end=60.0, dt=20.0)
    by_flags = solver.simulate(model, params, method=scheme(), positive=True, factor_loop=True, **kw)
    wrapped = solver.simulate(model, params, method=solver.Positive(solver.PerFactor(scheme())), **kw)
    assert by_flags.ok and wrapped.ok
    np.testing.assert_array_equal(np.asarray(by_flags.final), np.asarray(wrapped.final))
    np.testing.assert_array_equal(np.asarray(by_flags.stats["limited"]), np.asarray(wrapped.stats["limited"]))


def test_per_factor_equals_the_batch():
    """Factors do not couple in diffusion: one after another equals all at once (RKL2: to round-off;
    TR-BDF2: to its CG tolerance)."""
    model, params = two_factors()
    for scheme, tol in ((solver.RKL2(), 1e-13), (solver.TRBDF2(tol=1e-12), 1e-9)):
        a = solver.simulate(model, params, t_end=60.0, dt=20.0, method=scheme, factor_loop=False)
        b = solver.simulate(model, params, t_end=60.0, dt=20.0, method=solver.PerFactor(scheme))
        ref = np.abs(np.asarray(a.final)).max()
        assert np.abs(np.asarray(a.final) - np.asarray(b.final)).max() <= tol * ref


def test_positive_limits_keeps_totals_and_never_changes_a_sign():
    """A spike diffused by RKL2 over steps that span several cells undershoots; Positive repairs it."""
    model, params = two_factors()
    c0 = np.zeros(model.state_shape)
    c0[:, model.state_shape[1] // 2] = 100.0
    params = solver.Params(**{**params.__dict__, "D": params.D * 10, "sources": (solver.Constant(rate=[0.0, 0.0]),)})
    kw = dict(t_end=60.0, dt=60.0, c0=jnp.asarray(c0))
    raw = solver.simulate(model, params, method=solver.RKL2(), positive=False, **kw)
    lim = solver.simulate(model, params, method=solver.Positive(solver.RKL2()), **kw)
    assert float(np.min(np.asarray(raw.final))) < 0          # the scheme undershoots here
    assert float(np.min(np.asarray(lim.final))) >= 0
    assert np.all(np.asarray(lim.stats["limited"]) > 0)
    np.testing.assert_allclose(np.asarray(model.total(lim.final)), np.asarray(model.total(raw.final)), rtol=1e-12)


def test_the_wrapper_keeps_the_scheme():
    s = solver.Positive(solver.PerFactor(solver.RKL2(s=7)))
    assert s.order == 2 and s.stages == 7 and s.base == solver.RKL2(s=7)
    assert solver.Positive(solver.ForwardEuler()).order == 1
    planned = solver.Positive(solver.RKL2()).plan(10.0, 5.0)
    assert isinstance(planned, solver.Positive) and planned.stages == solver.rkl2_stages(50.0)
    assert float(s.limit(jnp.asarray(2.0))) == float(solver.RKL2(s=7).limit(jnp.asarray(2.0)))


def test_a_flag_against_a_wrapper_is_refused():
    model, params = two_factors()
    with pytest.raises(ValueError, match="positive=False contradicts the Positive"):
        solver.simulate(model, params, t_end=10.0, dt=10.0, method=solver.Positive(solver.RKL2()), positive=False)
    with pytest.raises(ValueError, match="factor_loop=False contradicts the PerFactor"):
        solver.simulate(model, params, t_end=10.0, dt=10.0, method=solver.PerFactor(solver.RKL2()), factor_loop=False)


def test_discrete_adjoint_through_the_wrappers():
    """The discrete adjoint sits under the wrappers: gradients match central differences."""
    model, params = two_factors()

    def J(d):
        p = solver.Params(**{**params.__dict__, "decay": params.decay * d})
        sol = solver.simulate(model, p, t_end=120.0, dt=30.0, method=solver.TRBDF2(tol=1e-12), adjoint="discrete")
        return jnp.sum(model.total(sol.final))

    g = float(jax.grad(J)(1.0))
    e = 1e-5
    fd = (float(J(1.0 + e)) - float(J(1.0 - e))) / (2 * e)
    assert abs(g - fd) <= 1e-6 * abs(fd)
