"""Time profiles of source rates, as traced pytrees.

Each profile gives the cumulative amount Q(t) = integral_0^t q(s) ds released
per site (point source) or in total (field source), for every factor, so that
a step of length h adds exactly Q(t + h) - Q(t): the mass balance holds to
round-off whatever the step. Rates are in pg/s, times in s.
"""

from __future__ import annotations

import abc

import equinox as eqx
import jax
import jax.numpy as jnp


def _arr(x):
    """Floating arrays keep their dtype; anything else becomes the default float."""
    x = jnp.asarray(x)
    return x if jnp.issubdtype(x.dtype, jnp.floating) else x.astype(jnp.result_type(float))


class AbstractProfile(eqx.Module):
    """q(t) >= 0 per factor; `cumulative(t)` returns Q(t), shape (S,).

    `factor_field` names the leaf that carries one value per factor (leading axis S),
    which `Model.params` broadcasts and `Model.check` validates (>= 0)."""

    factor_field = "rate"

    def factor_shape(self, n_factors: int) -> tuple:
        return (n_factors,)

    def factor_values(self):
        return getattr(self, self.factor_field)

    @abc.abstractmethod
    def cumulative(self, t): ...

    @abc.abstractmethod
    def rate_at(self, t):
        """q(t), right-continuous at switch times."""


class Constant(AbstractProfile):
    """q(t) = rate for start <= t < stop (stop = inf by default)."""

    rate: jax.Array = eqx.field(converter=_arr)
    start: jax.Array = eqx.field(converter=_arr, default=0.0)
    stop: jax.Array = eqx.field(converter=_arr, default=float("inf"))

    def cumulative(self, t):
        span = jnp.clip(t - self.start, 0.0, jnp.maximum(self.stop - self.start, 0.0))
        return self.rate * span

    def rate_at(self, t):
        return self.rate * ((t >= self.start) & (t < self.stop))


class Exponential(AbstractProfile):
    """q(t) = rate * exp(-k (t - start)) for t >= start: e.g. secretion by dying cells."""

    rate: jax.Array = eqx.field(converter=_arr)
    k: jax.Array = eqx.field(converter=_arr)
    start: jax.Array = eqx.field(converter=_arr, default=0.0)

    def cumulative(self, t):
        tau = jnp.maximum(t - self.start, 0.0)
        kt = self.k * tau
        small = jnp.abs(kt) < 1e-6
        safe_k = jnp.where(small, 1.0, self.k)
        frac = jnp.where(small, tau * (1 - kt / 2), -jnp.expm1(-jnp.where(small, 0.0, kt)) / safe_k)
        return self.rate * frac

    def rate_at(self, t):
        return jnp.where(t >= self.start, self.rate * jnp.exp(-self.k * jnp.maximum(t - self.start, 0.0)), 0.0)


class PiecewiseLinear(AbstractProfile):
    """q(t) interpolated linearly between knots (times (P,), rates (S, P)); zero outside them."""

    times: jax.Array = eqx.field(converter=_arr)
    rates: jax.Array = eqx.field(converter=_arr)

    factor_field = "rates"

    def factor_shape(self, n_factors: int) -> tuple:
        return (n_factors, self.times.shape[0])

    def cumulative(self, t):
        tk, qk = self.times, self.rates
        seg = 0.5 * (qk[:, 1:] + qk[:, :-1]) * jnp.diff(tk)
        knots = jnp.concatenate([jnp.zeros_like(qk[:, :1]), jnp.cumsum(seg, axis=1)], axis=1)
        tc = jnp.clip(t, tk[0], tk[-1])
        j = jnp.clip(jnp.searchsorted(tk, tc, side="right") - 1, 0, tk.shape[0] - 2)
        t0, t1 = tk[j], tk[j + 1]
        q0, q1 = qk[:, j], qk[:, j + 1]
        w = jnp.where(t1 > t0, (tc - t0) / jnp.where(t1 > t0, t1 - t0, 1.0), 0.0)
        qt = q0 + w * (q1 - q0)
        return knots[:, j] + 0.5 * (q0 + qt) * (tc - t0)

    def rate_at(self, t):
        inside = (t >= self.times[0]) & (t <= self.times[-1])
        return jnp.where(inside, jax.vmap(lambda q: jnp.interp(t, self.times, q))(self.rates), 0.0)
