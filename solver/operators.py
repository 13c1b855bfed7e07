"""Diffusion operators with their linear losses, as Modules (one per kind of space).

    L c = -M^{-1} K c - r c

K: the stiffness (conductance) matrix of the space, M: its lumped mass, r >= 0:
every first-order loss rate per node, the sink (decay, linear uptake by region,
capillary clearance, Robin boundary terms). With every linear loss in the
operator, a stepper's fixed point L c + f = 0 is the exact discrete steady state
(`solver.steady_state`) and a long step in the quasi-steady phase carries no
splitting error. Spaces apply them (`space.apply(c, op)`); steppers only see
`apply`, `diagonal`, `rate_bound` and `sink` through the space.
"""

from __future__ import annotations

import equinox as eqx
import jax


class MeshOperator(eqx.Module):
    """Lumped P1: weights w_ij = g_e / m_i in the space's layout, (S, 2E) or (S, K, N); d the
    diagonal of -L, row sums of w plus the sink (S, N); sink (S, N) or None."""

    w: jax.Array
    d: jax.Array
    sink: jax.Array | None = None

    def with_sink(self, r) -> "MeshOperator":
        return MeshOperator(self.w, self.d + r, r if self.sink is None else self.sink + r)


class GridOperator(eqx.Module):
    """Finite volumes: face conductances per axis, each (S,) (homogeneous) or (S, *face_shape);
    sink broadcastable to (S, *shape), or None."""

    faces: tuple
    sink: jax.Array | None = None

    def with_sink(self, r) -> "GridOperator":
        return GridOperator(self.faces, r if self.sink is None else self.sink + r)
