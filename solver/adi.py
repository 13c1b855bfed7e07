"""Alternating-direction implicit stepping on voxel grids: the Douglas scheme.

For dc/dt = L c + f with L = sum_a A_a, A_a the 1-D operator along grid axis a (its face
conductances, and the sink r split equally over the d axes: A_a c = div_a(g_a grad_a c) - r/d c),
one step of length h is the Douglas (Douglas-Gunn; Douglas-Rachford with theta = 1/2) scheme

    Y_0 = c + h (L c + f)
    Y_a = Y_{a-1} + (h/2) A_a (Y_a - c),    a = 1..d
    c'  = Y_d,

second order in time and unconditionally stable for these (negative semi-definite) operators
(Hundsdorfer & Verwer 2003, Numerical Solution of Time-Dependent Advection-Diffusion-Reaction
Equations, ch. IV.3). It is solved in increment form Z_a = Y_a - c:

    Z_0 = h (L c + f),    (I - (h/2) A_a) Z_a = Z_{a-1},    c' = c + Z_d,

each stage a set of independent tridiagonal systems along one axis (`jax.lax.linalg.tridiagonal_solve`,
batched over the other axes). Where every line along an axis has the same matrix (homogeneous
grids without a mask: one matrix per factor) and the axis is not long (n <= DENSE_MAX), the solve is
instead a product with the matrix's inverse, formed once per step from the matrix's eigenvectors (the
DCT-II basis; `_line_inverse`, no factorisation): 2n flops per value against
about 8 for the Thomas recurrence, but a matrix product runs near the CPU's peak where LAPACK's
gtsv with many right-hand sides does not (measured at n = 100, 100^3 values, one thread: three
sweeps in 8.2 ms against 25.8 ms, equal to 3e-7 in float32). Without a sink the inverse's
columns are rescaled to sum to 1, which they do exactly in exact arithmetic, so the total is kept
to the round-off of one matrix product. A field with L c + f = 0 gives Z_0 = 0 and is an exact fixed
point; with zero-flux faces each solve keeps the sum of its right-hand side, so without losses
the total changes by exactly h sum f (up to round-off). Unlike TR-BDF2 the scheme is not
L-stable: a mode stiff along one axis is multiplied by about -1 per step, as under Crank-Nicolson.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from . import steppers
from .space import lead_ones
from .steppers import AbstractStepper, _rhs

#: longest grid axis solved by a dense inverse rather than the tridiagonal recurrence (line-invariant
#: axes only). Three sweeps over an n^3 float32 cube on one CPU core, recurrence against product:
#: n = 100 25.8 / 8.2 ms, 128 72 / 31, 160 150 / 71, 200 303 / 183, 256 970 / 569: the product's
#: cost per value grows as n and the recurrence's does not, so it stops paying past a few hundred
DENSE_MAX = 256


def _line_invariant(space, sink) -> bool:
    """Whether every grid line along every axis has the same tridiagonal matrix (per factor):
    homogeneous conductances and a sink constant in space."""
    if not space.homogeneous:
        return False
    if sink is None:
        return True
    return all(s == 1 for s in lead_ones(sink, len(space.shape) + 1).shape[1:])


def _line_inverse(n, alpha, beta, dtype):
    """(S, n, n) inverses of the line matrices I - alpha Lap + beta, Lap the zero-flux 1-D Laplacian
    (x_{i-1} - 2 x_i + x_{i+1}, one neighbour at the ends), alpha (S, 1), beta (S, 1) or None.

    The zero-flux Laplacian is diagonalised by the orthonormal DCT-II basis V (eigenvalues
    -4 sin^2(pi k / 2n)), so the inverse is V diag(1 / (1 + 4 alpha sin^2 + beta)) V^T: one small
    matrix product per factor, no factorisation (LAPACK's batched LU inside the step loop can also
    deadlock on a pool of few threads when several axes' inverses run at once)."""
    k = np.arange(n)
    V = np.sqrt(2.0 / n) * np.cos(np.pi * np.outer(2 * k + 1, k) / (2 * n))   # row i, column k
    V[:, 0] = 1.0 / np.sqrt(n)
    mu = 4.0 * np.sin(np.pi * k / (2 * n)) ** 2
    lam = 1.0 + alpha * jnp.asarray(mu, dtype)
    if beta is not None:
        lam = lam + beta
    V = jnp.asarray(V, dtype)
    return jnp.einsum("ik,sk,jk->sij", V, 1.0 / lam, V)


def _solve_axis(space, ga, r, z, h, a, invariant):
    """Solve (I - (h/2) A_a) x = z along grid axis a for fields z (S, *shape).

    ga: the face conductances along a, (S,) or (S, *face_shape); r: the sink share r/d, None, a
    per-factor (S,) array (invariant) or a full (S, *shape) array."""
    ax = a + 1
    n = z.shape[ax]
    S = z.shape[0]
    half = 0.5 * h
    if invariant:
        # one matrix per factor; the other axes are right-hand sides
        g = jnp.broadcast_to(ga.reshape(-1), (S,)).astype(z.dtype)[:, None]
        if n <= DENSE_MAX:
            inv = _line_inverse(n, half * g, None if r is None else half * r.reshape(-1, 1), z.dtype)
            if r is None:
                inv = inv / jnp.sum(inv, axis=1, keepdims=True)    # column sums 1: the total is kept
            axes = "abcdefgh"[:z.ndim - 1]                           # the grid axes; i, j: along axis a
            spec = f"sij,s{axes.replace(axes[a], 'j')}->s{axes.replace(axes[a], 'i')}"
            return jnp.einsum(spec, inv, z)
        # the recurrence: diagonals (S, n), b (S, n, R) with the solve axis contiguous (the LAPACK
        # kernel takes column-major b), i.e. z with axis a moved last and viewed as (S, R, n)
        i = jnp.arange(n)
        lower = jnp.where(i >= 1, -half * g, 0.0)
        upper = jnp.where(i <= n - 2, -half * g, 0.0)
        diag = 1.0 - lower - upper
        if r is not None:
            diag = diag + half * r.reshape(-1, 1)
        moved = jnp.moveaxis(z, ax, -1)
        b = jnp.swapaxes(moved.reshape(S, -1, n), 1, 2)
        x = jax.lax.linalg.tridiagonal_solve(lower, diag, upper, b)
        return jnp.moveaxis(jnp.swapaxes(x, 1, 2).reshape(moved.shape), -1, ax)
    # a matrix per grid line: diagonals (S, *other, n) and b (S, *other, n, 1)
    if space.homogeneous:
        ga = jnp.broadcast_to(ga.reshape((-1,) + (1,) * len(space.shape)),
                              (S,) + tuple(m - (k == a) for k, m in enumerate(space.shape)))
    pad_lo = [(0, 0)] * ga.ndim
    pad_hi = [(0, 0)] * ga.ndim
    pad_lo[ax] = (1, 0)
    pad_hi[ax] = (0, 1)
    lower = -half * jnp.pad(ga, pad_lo)           # coefficient of x_{i-1}: -h/2 g_{i-1/2}, 0 at i = 0
    upper = -half * jnp.pad(ga, pad_hi)           # coefficient of x_{i+1}: -h/2 g_{i+1/2}, 0 at i = n-1
    diag = 1.0 - lower - upper
    if r is not None:
        diag = diag + half * r
    lower, diag, upper = (jnp.broadcast_to(jnp.moveaxis(v, ax, -1).astype(z.dtype),
                                           jnp.moveaxis(z, ax, -1).shape) for v in (lower, diag, upper))
    x = jax.lax.linalg.tridiagonal_solve(lower, diag, upper, jnp.moveaxis(z, ax, -1)[..., None])
    return jnp.moveaxis(x[..., 0], -1, ax)


class DouglasADI(AbstractStepper):
    """Douglas ADI (theta = 1/2) on voxel grids: second order, unconditionally stable, d tridiagonal
    solves per step (one per axis) and no iterations; the sink is split equally over the axes.

    Factors are solved together (one batched product per axis), not one after another: on V5 with 10
    factors (100^3, one thread) a step took 103-120 ms batched against 144-171 ms in a loop over the
    factors (a step makes one pass per axis, so nothing stays in cache between factors)."""

    loop_factors: bool = eqx.field(static=True, default=False, init=False)

    def diffuse(self, space, g, c, h, f=None):
        if getattr(space, "kind", None) != "grid":
            raise ValueError(
                f"DouglasADI (method='adi') needs a voxel grid (GridSpace); got a {getattr(space, 'kind', type(space).__name__)} "
                "space: on meshes use method='trbdf2', 'cn', 'rkl2' or 'euler'")
        nd = len(space.shape)
        sink = g.sink
        invariant = _line_invariant(space, sink)
        if sink is None:
            r = None
        elif invariant:
            r = jnp.broadcast_to(sink, (c.shape[0],) + (1,) * nd).reshape(c.shape[0]) / nd
        else:
            r = jnp.broadcast_to(sink, c.shape) / nd
        z = h * _rhs(space, g, c, f)
        for a, ga in enumerate(g.faces):
            z = _solve_axis(space, ga, r, z, h, a, invariant)
        return c + z, jnp.zeros((), jnp.int32), jnp.array(True)


steppers.METHODS["adi"] = DouglasADI
