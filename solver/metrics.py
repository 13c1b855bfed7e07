"""Exposure metrics accumulated inside the time loop, at every step (`simulate(metrics=...)`).

For factor s and region r with volume V_r = sum_i W_ir (W_ir: the part of node i's control
volume that lies in region r, mm^3), the region mean is

    cbar_sr(t) = sum_i W_ir c_si(t) / V_r                                  (pg/mm^3)

and a step [t0, t1] of length h = t1 - t0 adds

    AUC_sr      += h (cbar_sr(t0) + cbar_sr(t1)) / 2                        (pg/mm^3 s, trapezoid)
    above_sr    += h * phi(cbar_sr(t0), cbar_sr(t1), theta_s)              (s)
    above_si    += h * phi(c_si(t0), c_si(t1), theta_s)                    (s, per node)

where phi(a, b, theta) = clip((max(a, b) - theta) / |b - a|, 0, 1) is the share of the step in
which the straight line from a to b lies above theta: a crossing inside the step counts from
the interpolated crossing time, so a linear ramp is timed exactly and a smooth course to
second order in h. Running maxima of cbar_sr and of max_{i in r} c_si at the step ends give
the peaks and their times (to within a step). The trapezoid is second order in h, the order
of the steppers, so the metrics no longer depend on how often frames are saved (they used
to be computed from hourly frames and missed a bolus' first hour).
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np


def fraction_above(a, b, theta):
    """Share of a step in which the linear interpolant from a (start) to b (end) exceeds theta.

    phi = clip((max(a, b) - theta) / |b - a|, 0, 1): 1 when both ends are above, 0 when both are
    at or below, and for a crossing the part of the step on the high side of the crossing time
    t* = t0 + h (theta - a) / (b - a). theta = +inf (no threshold) gives 0.
    """
    finite = jnp.isfinite(theta)
    th = jnp.where(finite, theta, 0.0)
    top = jnp.maximum(a, b) - th
    span = jnp.abs(b - a)
    tiny = jnp.finfo(jnp.result_type(span)).tiny
    phi = jnp.where(span > 0, jnp.clip(top / jnp.maximum(span, tiny), 0.0, 1.0), (top > 0).astype(span.dtype))
    return jnp.where(finite, phi, 0.0)


class Exposure(eqx.Module):
    """Region-wise exposure of each factor, updated after every time step (see the module docstring).

    weights: (N, R) mm^3, the volume of node (or voxel) i's control volume in region r: for meshes
        `mass_i * share_ir`, for grids the voxel volume in the voxel's own region (0 outside tissue).
    thresholds: (S,) pg/mm^3 per factor; +inf for a factor without one.

    The accumulator (`init` / `update`) is a dict of arrays:
        auc (S, R)            time integral of the region mean, pg/mm^3 s
        peak_mean (S, R)      largest region mean at a step end, pg/mm^3; peak_mean_time (S, R) s
        peak_max (S, R)       largest nodal value in the region, pg/mm^3; peak_max_time (S, R) s
        above_mean (S, R)     time the region mean spent above the threshold, s
        above_node (S, N)     time each node spent above the threshold, s (for `exposed_share`)
        auc_bound (S, R)      time integral of the region mean of the bound pool (with binding only)
    Fields are (S, *space): (S, N) on meshes, (S, *grid_shape) on grids (flattened here).
    """

    weights: jax.Array
    thresholds: jax.Array

    def __init__(self, weights, thresholds, *, dtype=None):
        w = np.asarray(weights, float)
        th = np.atleast_1d(np.asarray(thresholds, float))
        if w.ndim != 2 or not np.all(np.isfinite(w)) or (w < 0).any():
            raise ValueError(f"Exposure weights must be a finite, non-negative (nodes, regions) array (mm^3), "
                             f"got shape {w.shape}")
        if th.ndim != 1 or np.isnan(th).any():
            raise ValueError(f"Exposure thresholds must be one number per factor (pg/mm^3; inf for none), got {th}")
        dtype = dtype or jnp.result_type(float)
        self.weights = jnp.asarray(w, dtype)
        self.thresholds = jnp.asarray(th, dtype)

    @classmethod
    def of(cls, model, thresholds=None, *, dtype=None) -> "Exposure":
        """Exposure over the regions of a `solver.Model`; thresholds (S,) pg/mm^3 (None: no threshold)."""
        space = model.space
        if space.kind == "mesh":
            w = np.asarray(space.weights, float) * np.asarray(space.mass_, float)[:, None]
        else:
            idx = np.asarray(space.region_index).reshape(-1)
            w = np.zeros((idx.size, model.n_regions))
            w[idx >= 0, idx[idx >= 0]] = space.voxel_volume
        th = np.full(model.n_factors, np.inf) if thresholds is None else np.broadcast_to(
            np.asarray(thresholds, float), (model.n_factors,))
        return cls(w, th, dtype=dtype)

    @property
    def volumes(self):
        """Region volumes V_r (R,), mm^3."""
        return jnp.sum(self.weights, axis=0)

    def region_means(self, c):
        """Region means (S, R) of a field (S, *space): sum_i W_ir c_i / V_r (0 for an empty region)."""
        v = self.volumes
        return (c.reshape(c.shape[0], -1) @ self.weights) / jnp.where(v > 0, v, 1.0)

    def region_max(self, c):
        """Largest nodal value (S, R) among the nodes that touch each region (0 for an empty region)."""
        flat = c.reshape(c.shape[0], -1)
        member = self.weights > 0                                            # (N, R)
        # one masked reduction over (S, N, R), not one per region
        top = jnp.max(jnp.where(member[None], flat[:, :, None], -jnp.inf), axis=1)
        return jnp.where(jnp.any(member, axis=0)[None], top, 0.0)

    def init(self, c, b, t):
        """The accumulator at time t with fields c (and the bound field b, or None)."""
        self = jax.tree.map(lambda x: x.astype(c.dtype), self)   # the carry keeps the fields' dtype
        S, R = c.shape[0], self.weights.shape[1]
        zero = jnp.zeros((S, R), c.dtype)
        t = jnp.broadcast_to(jnp.asarray(t, c.dtype), (S, R))
        acc = {"auc": zero, "peak_mean": self.region_means(c), "peak_mean_time": t,
               "peak_max": self.region_max(c), "peak_max_time": t, "above_mean": zero,
               "above_node": jnp.zeros((S, self.weights.shape[0]), c.dtype)}
        if b is not None:
            acc["auc_bound"] = zero
        return acc

    def update(self, acc, c0, b0, c1, b1, t0, t1):
        """Add the step [t0, t1] from fields (c0, b0) to (c1, b1)."""
        self = jax.tree.map(lambda x: x.astype(c1.dtype), self)
        h = t1 - t0
        m0, m1 = self.region_means(c0), self.region_means(c1)
        x1 = self.region_max(c1)
        th = self.thresholds[:, None]
        new_mean, new_max = m1 > acc["peak_mean"], x1 > acc["peak_max"]
        out = {"auc": acc["auc"] + 0.5 * h * (m0 + m1),
               "peak_mean": jnp.where(new_mean, m1, acc["peak_mean"]),
               "peak_mean_time": jnp.where(new_mean, t1, acc["peak_mean_time"]),
               "peak_max": jnp.where(new_max, x1, acc["peak_max"]),
               "peak_max_time": jnp.where(new_max, t1, acc["peak_max_time"]),
               "above_mean": acc["above_mean"] + h * self.above(m0, m1, th),
               "above_node": acc["above_node"] + h * self.above(c0.reshape(c0.shape[0], -1),
                                                                c1.reshape(c1.shape[0], -1), th)}
        if "auc_bound" in acc:
            out["auc_bound"] = acc["auc_bound"] + 0.5 * h * (self.region_means(b0) + self.region_means(b1))
        return out

    def above(self, a, b, theta):
        """Share of a step [a -> b] above theta (the exact `fraction_above`)."""
        return fraction_above(a, b, theta)

    def exposed_share(self, acc, exposure):
        """Share (S, R) of each region's volume whose nodes spent at least `exposure` seconds above
        the threshold (see `exposed_share`)."""
        return exposed_share(acc["above_node"], self.weights, exposure)


class SmoothExposure(Exposure):
    """`Exposure` with a differentiable time above threshold, for optimisation (`fitting.design`):
    a step adds h (sigma((a - theta) / w) + sigma((b - theta) / w)) / 2 with w = width * theta
    (sigma the logistic function) instead of the exact share of the step above theta, so the
    time above threshold has a gradient where the course is near the threshold. width -> 0
    gives the exact accumulator to within the smoothing; AUC and peaks are the exact ones.
    The design module reports the exact metric (`Exposure`) at the optimum."""

    width: float = eqx.field(static=True, default=0.1)

    def __init__(self, weights, thresholds, *, width: float = 0.1, dtype=None):
        if not (isinstance(width, (int, float)) and 0 < width < 10):
            raise ValueError(f"SmoothExposure width = {width!r}; allowed: 0 < width < 10 (a share of the threshold)")
        super().__init__(weights, thresholds, dtype=dtype)
        self.width = float(width)

    @classmethod
    def of(cls, model, thresholds=None, *, width: float = 0.1, dtype=None) -> "SmoothExposure":
        e = Exposure.of(model, thresholds, dtype=dtype)
        return cls(np.asarray(e.weights), np.asarray(e.thresholds), width=width, dtype=dtype)

    def above(self, a, b, theta):
        finite = jnp.isfinite(theta)
        th = jnp.where(finite, theta, 1.0)
        w = self.width * jnp.abs(th)
        s = 0.5 * (jax.nn.sigmoid((a - th) / w) + jax.nn.sigmoid((b - th) / w))
        return jnp.where(finite, s, 0.0)


def exposed_share(above_node, weights, exposure):
    """sum_i W_ir [above_si >= exposure] / V_r, (S, R): above_node (S, N) s, weights W (N, R) mm^3."""
    hit = (jnp.asarray(above_node) >= exposure * (1 - 1e-9)).astype(jnp.result_type(weights))
    v = jnp.sum(weights, axis=0)
    return (hit @ weights) / jnp.where(v > 0, v, 1.0)
