"""Wrappers around a diffusion stepper: they change what a step does, not the scheme.

Positive        the positivity limiter: negative values clipped and the rest scaled so each factor's
                total is unchanged (a no-op whenever the step made no negative value).
PerFactor       one factor at a time (a Python-unrolled loop over factors), each with its own CG
                iterations, instead of one batched solve for all factors.
compose         the canonical order Positive(PerFactor(scheme)) from a stepper or method name and
                `simulate`'s flags.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp

from .steppers import AbstractStepper, make_stepper


def positivity_limiter(space, c):
    """Clip negative values and scale the rest down so that each factor's total is unchanged.

    Linear schemes above first order cannot be unconditionally positive
    (Bolley & Crouzeix 1978); RKL2 and Crank-Nicolson undershoot next to a
    point source when sqrt(D dt) spans several cells. The limiter is
    inactive (an identity) whenever the step produced no negative value; it
    never changes a sign and never creates mass: the scale total / kept lies
    in [0, 1]. A factor whose total is negative (the step removed more than
    the field held, e.g. Crank-Nicolson against a strong Robin sink) cannot be
    repaired so: it is set to zero and reported as a failed step.
    Returns (c, amount clipped (S,), failed (S,) bool).
    """
    neg = jnp.where(c < 0, c, 0.0)
    pos = c - neg
    total, kept = space.total(c), space.total(pos)
    # a total below zero beyond round-off (an emptied factor may end at -1e-30)
    failed = total < -10 * jnp.finfo(c.dtype).eps * (kept - space.total(neg))
    scale = jnp.where(kept > 0, jnp.clip(total / jnp.where(kept > 0, kept, 1.0), 0.0, 1.0), 1.0)
    return pos * scale.reshape((-1,) + (1,) * (c.ndim - 1)), -space.total(neg), failed


class AbstractWrapper(AbstractStepper):
    """A stepper around another one (`inner`), changing what a step does but not the scheme: its order,
    stages, stability limit and planning are the inner stepper's. Wrappers compose:
    `Positive(PerFactor(RKL2()))` diffuses the factors one after another and limits the result."""

    inner: eqx.AbstractVar[AbstractStepper]

    def _copy_scheme(self):
        self.order = self.inner.order
        self.loop_factors = self.inner.loop_factors

    @property
    def base(self):
        return self.inner.base

    @property
    def stages(self):
        return self.inner.stages

    @property
    def linear_sources(self):
        return getattr(self.inner, "linear_sources", False)

    def plan(self, rho_max, h_max):
        return type(self)(self.inner.plan(rho_max, h_max))

    def limit(self, rho):
        return self.inner.limit(rho)

    def rebuild(self, base):
        return type(self)(self.inner.rebuild(base))

    def init(self, c):
        return self.inner.init(c)

    def positivity(self, state):
        return self.inner.positivity(state)

    def diffuse(self, space, g, c, h, f=None):
        new, its, ok, _, _ = self.step(space, g, c, h, f, self.init(c))
        return new, its, ok


class Positive(AbstractWrapper):
    """The conservative positivity limiter (`positivity_limiter`) after each step of `inner`: clips
    negative values and scales the rest so that each factor's total is kept; the amount clipped and a
    failure flag (a factor whose total went negative) are carried in the state (`positivity`)."""

    inner: AbstractStepper

    def __init__(self, inner):
        self.inner = make_stepper(inner)
        self._copy_scheme()

    def init(self, c):
        S = c.shape[0]
        return self.inner.init(c), jnp.zeros((S,), c.dtype), jnp.zeros((S,), bool)

    def positivity(self, state):
        return state[1], state[2]

    def step(self, space, g, c, h, f, state, *, error: bool = False):
        new, its, ok, err, st = self.inner.step(space, g, c, h, f, None if state is None else state[0], error=error)
        new, moved, failed = positivity_limiter(space, new)
        return new, its, ok, err, (st, moved, failed)


class PerFactor(AbstractWrapper):
    """`inner` applied to one factor after another (`lax.map`) instead of to all at once: factors do
    not couple in diffusion, and one factor's stages or CG iterations stay in cache (measured in
    benchmarks/README.md). The state keeps its factor axis."""

    inner: AbstractStepper

    def __init__(self, inner):
        self.inner = make_stepper(inner)
        self._copy_scheme()

    def step(self, space, g, c, h, f, state, *, error: bool = False):
        add = lambda x: x[:, None]  # noqa: E731  keep a factor axis of length 1
        xs = (add(c), jax.tree.map(add, g), None if f is None else jax.tree.map(add, f), jax.tree.map(add, state))
        new, k, conv, err, st = jax.lax.map(
            lambda a: self.inner.step(space, a[1], a[0], h, a[2], a[3], error=error), xs)
        drop = lambda x: x[:, 0]  # noqa: E731
        return (drop(new), jnp.sum(k).astype(jnp.int32), jnp.all(conv), None if err is None else drop(err),
                jax.tree.map(drop, st))


def compose(stepper, *, positive: bool | None, per_factor: bool | None, n_factors: int) -> AbstractStepper:
    """The canonical composition Positive(PerFactor(scheme)) of a stepper or method name with the flags
    of `simulate` (None: keep what the stepper has; per_factor None with no PerFactor given: the
    scheme's default for several factors). A flag that contradicts a wrapper given is an error."""
    stepper = make_stepper(stepper)
    given, node = set(), stepper
    while isinstance(node, AbstractWrapper):
        given.add(type(node))
        node = node.inner
    for flag, cls, name in ((positive, Positive, "positive"), (per_factor, PerFactor, "factor_loop")):
        if flag is False and cls in given:
            raise ValueError(f"{name}=False contradicts the {cls.__name__}(...) wrapper of method={stepper!r}")
    base = stepper.base
    loop = PerFactor in given or (per_factor if per_factor is not None else (n_factors > 1 and base.loop_factors))
    out = PerFactor(base) if loop else base
    return Positive(out) if (Positive in given or positive) else out
