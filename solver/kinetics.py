"""Nonlinear pointwise kinetics: saturable uptake and ECM binding, positive and conservative.

Per node and factor, with kappa the linear loss rate (decay, uptake, clearance):

    dc/dt = -kappa c - V c / (Km + c) - kon (B - b) c + koff b
    db/dt =  kon (B - b) c - koff b - kdeg b

(Michaelis-Menten uptake V, Km; binding to B sites with kon, koff; degradation
of bound factor kdeg, which frees its site).

`step` is the Strang splitting  Loss(h/2) Exchange(h) Loss(h/2):

* Exchange: c + s <-> b with T = c + b conserved is the Riccati equation
  db/dt = kon (T - b)(B - b) - koff b = kon (b - r1)(b - r2), solved exactly:
  b stays between b0 and the equilibrium r1 in [0, min(T, B)], so the bound
  pool never exceeds the capacity and c = T - b >= 0 for any step.
* Loss: the free factor's linear and saturable losses by the modified
  Patankar-Runge-Kutta scheme MPRK22 with alpha = 1 (Kopecz & Meister 2018,
  BIT Numer Math 58:691): second order, unconditionally positive and
  conservative; the bound factor's degradation exactly.

Second order overall; every loss is returned for the mass budget.
"""

from __future__ import annotations

import jax.numpy as jnp


def _coefficients(c, b, kappa, V, Km, kon, B):
    """Per-unit-c loss to sinks (linear, saturable), per-unit-c binding rate."""
    return kappa, V / (Km + c), kon * jnp.maximum(B - b, 0.0)


def _solve(a11, a12, a21, a22, r1, r2):
    det = a11 * a22 - a12 * a21
    return (a22 * r1 - a12 * r2) / det, (a11 * r2 - a21 * r1) / det


def _ratio(num, den):
    """num / den for den >= 0 (Patankar weight); 1 where both vanish."""
    return jnp.where(den > 0, num / jnp.where(den > 0, den, 1.0), 1.0)


def mprk22(c, b, h, *, kappa, V, Km, kon, koff, B, kdeg):
    """One step of length h. Returns (c, b, losses) with losses a dict of the amounts per unit
    volume removed by each mechanism: 'linear' (kappa c), 'saturable', 'degraded' (kdeg b)."""
    lin0, sat0, bind0 = _coefficients(c, b, kappa, V, Km, kon, B)
    g = koff + kdeg
    # stage 1: modified Patankar Euler with coefficients at t_n
    c1, b1 = _solve(1 + h * (lin0 + sat0 + bind0), -h * koff, -h * bind0, 1 + h * g, c, b)
    lin1, sat1, bind1 = _coefficients(c1, b1, kappa, V, Km, kon, B)
    rc, rb = _ratio(c, c1), _ratio(b, b1)
    # stage 2: averaged production/destruction with Patankar weights c2 / c1, b2 / b1
    dc = 0.5 * h * ((lin0 + sat0 + bind0) * rc + lin1 + sat1 + bind1)
    pb = 0.5 * h * (bind0 * rc + bind1)
    db = 0.5 * h * g * (rb + 1)
    pc = 0.5 * h * koff * (rb + 1)
    c2, b2 = _solve(1 + dc, -pc, -pb, 1 + db, c, b)
    losses = {"linear": 0.5 * h * (lin0 * rc + lin1) * c2,
              "saturable": 0.5 * h * (sat0 * rc + sat1) * c2,
              "degraded": 0.5 * h * kdeg * (rb + 1) * b2}
    return c2, b2, losses


def exchange(c, b, h, *, kon, koff, B):
    """Exact binding exchange over h: (c, b) with c + b conserved and 0 <= b <= min(c + b, B)."""
    T = c + b
    q = kon * (T + B) + koff
    disc = jnp.maximum(q * q - 4 * kon * kon * T * B, 0.0)
    root = jnp.sqrt(disc)
    on = kon > 0
    kon_ = jnp.where(on, kon, 1.0)
    r1 = 2 * kon * T * B / jnp.where(q + root > 0, q + root, 1.0)   # stable small root: the equilibrium
    r2 = (q + root) / (2 * kon_)
    u = (b - r1) / jnp.where(b - r2 < 0, b - r2, -1.0) * jnp.exp(-kon * root / kon_ * h)
    b_bind = (r1 - u * r2) / (1 - u)
    b_new = jnp.where(on, jnp.clip(b_bind, 0.0, jnp.minimum(T, B)), b * jnp.exp(-koff * h))
    return T - b_new, b_new


def step(c, b, h, *, kappa, V, Km, kon, koff, B, kdeg):
    """One reaction step of length h: Loss(h/2) Exchange(h) Loss(h/2). Returns (c, b, losses)."""
    def loss(c, b, tau):
        c, _, lost = mprk22(c, jnp.zeros_like(c), tau, kappa=kappa, V=V, Km=Km, kon=0.0, koff=0.0, B=0.0, kdeg=0.0)
        kept = b * jnp.exp(-kdeg * tau)
        return c, kept, {"linear": lost["linear"], "saturable": lost["saturable"], "degraded": b - kept}

    c, b, l1 = loss(c, b, 0.5 * h)
    c, b = exchange(c, b, h, kon=kon, koff=koff, B=B)
    c, b, l2 = loss(c, b, 0.5 * h)
    return c, b, {k: l1[k] + l2[k] for k in l1}
