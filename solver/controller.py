"""Step-size control: a PID controller on a scaled local-error estimate (after diffrax's
`PIDController`, Soederlind 2003 / Hairer, Norsett & Wanner II.IV.2).

The error of a step is measured per factor as a relative norm in the lumped mass inner
product, ||e||_M / (rtol ||y||_M + atol ||1||_M), the largest over factors (and the bound
pool, with binding): a global measure, suited to what the tool reports (region means and
their integrals), which a pointwise norm would let be dominated by the near-zero front far
from the sources. A step is accepted when that is <= 1; the next step is
h * clip(safety * e_n^(-b1 / k) * e_{n-1}^(-b2 / k), factormin, factormax), k the order of
the estimate (local error ~ h^k), b1 = icoeff + pcoeff, b2 = -pcoeff (pcoeff = 0: the
I controller; diffrax's defaults).
"""

from __future__ import annotations

import math

import equinox as eqx
import jax.numpy as jnp


class PIDController(eqx.Module):
    """rtol, atol: relative and absolute tolerances (atol in the field's units, pg/mm^3);
    dt0: first step (s; default min(60 s, first save interval)); dt_max: longest step (s);
    max_steps: steps tried (accepted and rejected) before giving up with status MAX_STEPS."""

    rtol: float = eqx.field(static=True, default=1e-3)
    atol: float = eqx.field(static=True, default=1e-9)
    dt0: float | None = eqx.field(static=True, default=None)
    dt_max: float = eqx.field(static=True, default=math.inf)
    max_steps: int = eqx.field(static=True, default=100_000)
    pcoeff: float = eqx.field(static=True, default=0.0)
    icoeff: float = eqx.field(static=True, default=1.0)
    safety: float = eqx.field(static=True, default=0.9)
    factormin: float = eqx.field(static=True, default=0.2)
    factormax: float = eqx.field(static=True, default=10.0)

    def __check_init__(self):
        for key in ("rtol", "atol"):
            v = getattr(self, key)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
                raise ValueError(f"{key} = {v!r}; allowed: a finite number >= 0")
        if not (0 < self.rtol < 1):
            raise ValueError(f"rtol = {self.rtol!r}; allowed: a number in (0, 1), e.g. 1e-3")
        if self.dt0 is not None and not (math.isfinite(self.dt0) and self.dt0 > 0):
            raise ValueError(f"dt0 = {self.dt0!r}; allowed: a finite number > 0 (s)")
        if not self.dt_max > 0:
            raise ValueError(f"dt_max = {self.dt_max!r}; allowed: a number > 0 (s)")
        if not (isinstance(self.max_steps, int) and self.max_steps > 0):
            raise ValueError(f"max_steps = {self.max_steps!r}; allowed: an integer > 0")

    def error_norm(self, space, e_parts, y_parts):
        """Largest over factors of ||e||_M / (rtol ||y||_M + atol ||1||_M); e_parts, y_parts: tuples of
        fields (S, *shape) (free, and bound with binding), y the larger of the step's two ends."""
        num = sum(space.total(e * e) for e in e_parts)
        den2 = sum(space.total(y * y) for y in y_parts)
        vol = space.total(jnp.ones_like(e_parts[0]))
        den = self.rtol * jnp.sqrt(den2) + self.atol * jnp.sqrt(vol * len(e_parts))
        num = jnp.sqrt(num)
        ratio = jnp.where(den > 0, num / jnp.where(den > 0, den, 1.0), jnp.where(num > 0, jnp.inf, 0.0))
        return jnp.max(jnp.where(jnp.isfinite(ratio), ratio, jnp.inf))

    def factor(self, err, prev_err, order: int):
        """The step's growth factor from this step's scaled error and the previous accepted one's."""
        k = order
        b1, b2 = self.icoeff + self.pcoeff, -self.pcoeff
        tiny = 1e-10
        inv = 1.0 / jnp.maximum(err, tiny)
        inv_prev = 1.0 / jnp.maximum(prev_err, tiny)
        f = self.safety * inv ** (b1 / k) * inv_prev ** (b2 / k)
        f = jnp.where(jnp.isfinite(err), f, self.factormin)
        # a rejected step never grows
        f = jnp.where(err > 1.0, jnp.minimum(f, self.safety), f)
        return jnp.clip(f, self.factormin, self.factormax)
