"""Pointwise reactions, integrated exactly: no negative value can come out.

Over a step of length h, with kappa_i = k_s + sum_r w_ir u_sr (decay plus
linear uptake) and the amount Q released by the sources in the step, spread as
the concentration increment s_i = Q phi_i / m_i, the exact solution of
dc/dt = -kappa c + s/h is

    c_i(t + h) = c_i E_i + s_i psi_i,    E = exp(-kappa h),  psi = (1 - E) / (kappa h),

both factors in [0, 1]: non-negative data stay non-negative for any h.
The loss splits into decay and uptake in the ratio k : (kappa - k) node by node.
"""

from __future__ import annotations

import jax.numpy as jnp


def decay_factors(kappa, h):
    """E = exp(-kappa h) and psi = (1 - E) / (kappa h), stable as kappa h -> 0."""
    x = kappa * h
    E = jnp.exp(-x)
    small = x < 1e-6
    psi = jnp.where(small, 1.0 - 0.5 * x, -jnp.expm1(-x) / jnp.where(small, 1.0, x))
    return E, psi


def react(c, kappa, h, amounts, sources):
    """One exact reaction step: returns (c_new, removed_field) with removed = c + s - c_new >= 0."""
    E, psi = decay_factors(kappa, h)
    new = c * E
    for src, q in zip(sources, amounts):
        new = src.add(new, q, psi)
    return new, E, psi
