"""The therapy model: injected cells that secrete while they survive, and conditioned medium.

Cells. An injection j of dose N_j cells at time t_j by a route with acute
retention rho_j (the washout at injection) leaves

    n_j(tau) = N_j rho_j [f e^{-k_fast tau} + (1 - f) e^{-k_slow tau}],   tau = t - t_j >= 0

cells (two-phase loss; Yasuda et al. 2005: ~45 % lost in the first hour, then
t1/2 ~3.6 d and ~30 d). Each secretes q_s pg/cell/s of factor s, times a
hypoxia multiplier for the site's region. The released amount has the closed form

    Q_s(t) = q_s m sum_j N_j rho_j [f (1 - e^{-k_fast tau_j}) / k_fast + (1 - f)(1 - e^{-k_slow tau_j}) / k_slow],

so a step adds exactly what the cells secreted in it (`cumulative`), and the
cell count itself is `cells(t)`. A schedule is several injections (arrays of
doses and times). Every number is a traced leaf.

Allogeneic cells: an immune clearance of rate r_j starts at onset o_j after the
injection and multiplies the survivors by e^{-r_j (tau - o_j)} for tau > o_j
(a third phase; r_j = 0, the default, is autologous). With a = min(tau, o_j),
b = max(tau - o_j, 0) and P(k, x) = (1 - e^{-k x}) / k, each phase integrates to

    P(k, a) + e^{-k a} P(k + r_j, b),

still closed form (and exactly P(k, tau) when o_j = r_j = 0).

Injection time: the acute retention is multiplied by g(t_j), a piecewise-linear
table (`retention_time`, `retention_factor`; constant outside, default g = 1),
so the gradient with respect to an injection time sees it.

Conditioned medium. `Bolus`: an amount per factor (volume x concentration,
converted by the caller) at one or several times, each delivered at once or
infused at a constant rate over a duration.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .profiles import AbstractProfile, _arr


def _phase_integral(k, tau):
    """integral_0^tau e^{-k s} ds, stable as k tau -> 0."""
    kt = k * tau
    small = jnp.abs(kt) < 1e-6
    return jnp.where(small, tau * (1 - kt / 2), -jnp.expm1(-jnp.where(small, 0.0, kt)) / jnp.where(small, 1.0, k))


class CellSecretion(AbstractProfile):
    """Secretion by injected cells (see the module docstring). Shapes: dose, time, retention (J,)
    injections; secretion (S,) pg/cell/s; fast_fraction, k_fast, k_slow scalars (1/s); multiplier
    a scalar (hypoxia multiplier of the site's region); immune_onset (s) and immune_rate (1/s)
    scalars or (J,), the allogeneic clearance of each injection (rate 0: none); retention_time (K,)
    increasing times (s, in the simulation's clock) and retention_factor (K,) the multiplier of the
    retention of an injection given at that time (interpolated linearly, constant outside)."""

    dose: jax.Array = eqx.field(converter=_arr)
    time: jax.Array = eqx.field(converter=_arr)
    retention: jax.Array = eqx.field(converter=_arr)
    secretion: jax.Array = eqx.field(converter=_arr)
    fast_fraction: jax.Array = eqx.field(converter=_arr)
    k_fast: jax.Array = eqx.field(converter=_arr)
    k_slow: jax.Array = eqx.field(converter=_arr)
    multiplier: jax.Array = eqx.field(converter=_arr, default=1.0)
    immune_onset: jax.Array = eqx.field(converter=_arr, default=0.0)
    immune_rate: jax.Array = eqx.field(converter=_arr, default=0.0)
    retention_time: jax.Array = eqx.field(converter=_arr, default=(0.0,))
    retention_factor: jax.Array = eqx.field(converter=_arr, default=(1.0,))

    factor_field = "secretion"

    def _tau(self, t):
        return jnp.maximum(jnp.asarray(t) - self.time, 0.0)

    def _retained(self):
        """Cells retained by each injection: dose x retention x the injection-time factor."""
        g = jnp.interp(self.time, self.retention_time, self.retention_factor)
        return self.dose * (self.retention * g)

    def _immune_split(self, tau):
        """(a, b): time before the immune onset and time after it."""
        onset = self.immune_onset
        return jnp.minimum(tau, onset), jnp.maximum(tau - onset, 0.0)

    def cells(self, t):
        """Retained living cells at time t (all injections)."""
        tau = self._tau(t)
        f = self.fast_fraction
        alive = f * jnp.exp(-self.k_fast * tau) + (1 - f) * jnp.exp(-self.k_slow * tau)
        alive = alive * jnp.exp(-self.immune_rate * self._immune_split(tau)[1])
        return jnp.sum(jnp.where(jnp.asarray(t) >= self.time, self._retained() * alive, 0.0))

    def cell_seconds(self, t):
        """integral_0^t cells(s) ds."""
        tau = self._tau(t)
        a, b = self._immune_split(tau)
        r = self.immune_rate
        f = self.fast_fraction

        def phase(k):
            return _phase_integral(k, a) + jnp.exp(-k * a) * _phase_integral(k + r, b)

        per = f * phase(self.k_fast) + (1 - f) * phase(self.k_slow)
        return jnp.sum(self._retained() * per)

    def cumulative(self, t):
        return self.secretion * self.multiplier * self.cell_seconds(t)

    def rate_at(self, t):
        return self.secretion * self.multiplier * self.cells(t)


class Bolus(AbstractProfile):
    """Conditioned medium: amounts (S,) in pg delivered at each of `time` (a scalar or (J,) doses),
    as a bolus (duration 0: a step that contains the time adds the whole amount, spread over that
    step by the forcing) or as an infusion at a constant rate over `duration` seconds. `scale` (K,)
    multiplies every amount by its product (default: none): separate leaves for what the amount
    is a product of (the volume and the concentration of a medium), so that each can be changed
    alone (a design control) while `amount` keeps the scenario's value."""

    amount: jax.Array = eqx.field(converter=_arr)
    time: jax.Array = eqx.field(converter=_arr, default=0.0)
    duration: jax.Array = eqx.field(converter=_arr, default=0.0)
    scale: jax.Array = eqx.field(converter=_arr, default=(1.0,))

    factor_field = "amount"

    def _delivered(self, t):
        """Doses delivered by time t (a fraction for a running infusion), summed over the doses."""
        t = jnp.asarray(t)
        d = self.duration
        infusing = d > 0
        frac = jnp.where(infusing, jnp.clip((t - self.time) / jnp.where(infusing, d, 1.0), 0.0, 1.0),
                         (t > self.time).astype(self.amount.dtype))
        return jnp.sum(frac)

    def _amount(self):
        return self.amount * jnp.prod(self.scale)

    def cumulative(self, t):
        return self._amount() * self._delivered(t)

    def rate_at(self, t):
        t = jnp.asarray(t)
        d = self.duration
        on = (d > 0) & (t >= self.time) & (t < self.time + d)
        return self._amount() * jnp.sum(jnp.where(on, 1.0 / jnp.where(d > 0, d, 1.0), 0.0))


def spread_sites(disc, n: int, *, region: str | None = None, seed: int = 0) -> np.ndarray:
    """n injection sites spread over a region (farthest-point sampling of its nodes or voxel
    centres): coordinates (n, dim) for `point_source`. region=None uses all tissue."""
    x = np.asarray(disc.coordinates)
    if region is None:
        keep = np.asarray(disc.mass).reshape(-1) > 0
    else:
        if region not in disc.regions:
            raise ValueError(f"region {region!r} is not one of {list(disc.regions)}")
        r = disc.regions.index(region)
        if disc.kind == "mesh":
            share = disc.mass_region / disc.mass[:, None]
            keep = share.argmax(axis=1) == r  # nodes mostly in the region; on coarse meshes, any touching it
            if keep.sum() < n:
                keep = share[:, r] > 0
        else:
            keep = np.asarray(disc.region_index).reshape(-1) == r
    pts = x[keep]
    if n < 1 or n > len(pts):
        raise ValueError(f"n = {n} sites; allowed: 1 to {len(pts)} (the nodes of the region)")
    return farthest_points(pts, n, seed)


def farthest_points(points: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """n of the points spread by farthest-point sampling from a seeded random start."""
    if n < 1 or n > len(points):
        raise ValueError(f"n = {n} sites; allowed: 1 to {len(points)} candidate points")
    rng = np.random.default_rng(seed)
    chosen = [int(rng.integers(len(points)))]
    dist = np.linalg.norm(points - points[chosen[0]], axis=1)
    for _ in range(n - 1):
        chosen.append(int(np.argmax(dist)))
        dist = np.minimum(dist, np.linalg.norm(points - points[chosen[-1]], axis=1))
    return points[chosen]
