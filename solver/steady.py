"""Steady states with the sources' rates frozen at a time t.

    (K + M r) c = f(t)     i.e.   -m_i (L c)_i = m_i s_i(t),

with L the model's operator, every linear loss r (decay, uptake, clearance, Robin)
on its diagonal: a symmetric positive definite system (r > 0 somewhere) solved by
Jacobi-preconditioned CG; differentiable through `jax.lax.custom_linear_solve`.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp

from .model import Model
from .params import Params
from .results import RESULTS, code, item
from .space import lead_ones
from .steppers import _linear_solve


class SteadyState(eqx.Module):
    c: jax.Array
    iterations: jax.Array
    converged: jax.Array

    @property
    def status(self):
        """An integer of `solver.RESULTS`: successful, or cg_failed."""
        return jnp.where(self.converged, code(RESULTS.successful), code(RESULTS.cg_failed))

    @property
    def result(self):
        return item(self.status)


def steady_state(model: Model, params: Params, *, t: float = 0.0, tol: float | None = None,
                 maxiter: int = 5000, throw: bool = False) -> SteadyState:
    """The steady field (S, *shape) for source rates q(t); needs a linear loss (decay, uptake,
    clearance or Robin) somewhere. throw: raise when CG did not converge (as `simulate`). Reverse
    mode differentiates by a transposed solve; where that does not converge the gradient is NaN."""
    out = _steady(model, params, t=t, tol=tol, maxiter=maxiter)
    if throw:
        from .simulate import _throw

        c, _ = _throw(out.c, out.status)
        out = SteadyState(c=c, iterations=out.iterations, converged=out.converged)
    return out


@eqx.filter_jit
def _steady(model: Model, params: Params, *, t, tol, maxiter) -> SteadyState:
    if params.reactions or params.binding is not None:
        raise ValueError("steady_state solves linear models; with saturable or Hill uptake or binding, run simulate "
                         "until the fields stop changing")
    space = model.space
    dtype = params.D.dtype
    tol = tol or (1e-10 if dtype == jnp.float64 else 1e-5)
    g = model.operator(params)
    shape = model.state_shape
    m = space.cg_mass(dtype)
    m = lead_ones(m, len(shape))
    rate = jnp.zeros(shape, dtype)
    t = jnp.asarray(t, dtype)
    for src, prof in zip(model.sources, params.sources):
        rate = src.add(rate, prof.rate_at(t))
    diag = jnp.broadcast_to(m * space.diagonal(g), shape)   # zero outside a masked tissue: _pcg guards it

    def matvec(x):
        return m * -space.apply(x, g)

    c, (its, ok) = _linear_solve(matvec, m * rate, diag, tol, maxiter)
    return SteadyState(c=c, iterations=its, converged=ok)
