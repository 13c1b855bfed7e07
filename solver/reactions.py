"""Pointwise reactions, integrated exactly: no negative value can come out.

Over a step of length h, with kappa_i = k_s + sum_r w_ir u_sr (decay plus
linear uptake by region), dc/dt = -kappa c has the exact solution

    c_i(t + h) = c_i exp(-kappa_i h),

a factor in (0, 1]: non-negative data stay non-negative for any h. The loss
splits into decay and uptake in the ratio k : (kappa - k) node by node.
Sources are not reactions: they enter the diffusion stepper as a forcing (see
simulate.py), which makes L c + f = 0 an exact fixed point of every stepper.
"""

from __future__ import annotations

import jax.numpy as jnp


def react(c, kappa, h):
    """One exact reaction step of length h."""
    return c * jnp.exp(-kappa * h)
