"""Diffusion steppers for dc/dt = L c + f, L = -M^{-1} K (reactions are split off).

f is the sources' forcing, constant over the step (its average); with it inside
the stepper, a field with L c + f = 0 is an exact fixed point of every stepper,
so steady states next to point sources carry no splitting error.

ForwardEuler    first order, stable for h rho <= 2 (rho: spectral radius of M^{-1} K).
RKL2            Runge-Kutta-Legendre super-time-stepping, second order, s stages,
                stable for h rho <= (s^2 + s - 2) / 2 (Meyer, Balsara & Aslam 2014,
                J Comput Phys 257:594, eqs. 16-17).
CrankNicolson   (M + h/2 K) c' = (M - h/2 K) c, second order, unconditionally stable,
                solved for the increment with Jacobi-preconditioned CG.
TRBDF2          a trapezoidal stage to t + gamma h and a BDF2 stage to t + h (gamma =
                2 - sqrt 2: both solves have the matrix M + (gamma/2) h K), second order
                and L-stable: stiff modes are damped, not left to ring as under
                Crank-Nicolson, so long steps in the quasi-steady phase are accurate.
                It carries an embedded third-order solution for the error estimate
                (Hosea & Shampine 1996, Appl Numer Math 20:21).

K here includes every linear loss (the operator's sink r: decay, uptake,
clearance, Robin), so L c + f = 0 is each stepper's exact fixed point.
"""

from __future__ import annotations

import abc
import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.ad_checkpoint import checkpoint_name

from .space import lead_ones


class StabilityError(ValueError):
    """A time step past an explicit scheme's stability limit."""


#: Relative slack in stability comparisons: a step equal to the limit, up to rounding, is accepted.
RTOL = 1e-6


def _fmt(x: float) -> str:
    return f"{x:.6g}"


class AbstractStepper(eqx.Module):
    order: int = eqx.field(static=True, default=2, init=False)
    #: Diffuse several factors one after another by default: worth it when a step makes
    #: several passes (stages, CG iterations) that then stay in cache.
    loop_factors: bool = eqx.field(static=True, default=True, init=False)

    def plan(self, rho_max: float, h_max: float) -> "AbstractStepper":
        """Host-side: the configured stepper for concrete spectral radius and step; raises when impossible."""
        return self

    def limit(self, rho):
        """Largest stable step for spectral radius rho (inf when unconditionally stable)."""
        return jnp.full_like(rho, jnp.inf)

    @property
    def stages(self) -> int:
        return 1

    @abc.abstractmethod
    def diffuse(self, space, g, c, h, f=None):
        """One step of length h with forcing f (or None): returns (c_new, cg_iterations, converged)."""

    def init(self, c):
        """The stepper's own state carried from step to step (e.g. a solver's starting guess), or None."""
        return None

    def step(self, space, g, c, h, f, state, *, error: bool = False):
        """One step with the stepper's state: (c_new, cg_iterations, converged, error estimate or None,
        new state). error: also return an embedded local-error estimate (steppers that have one)."""
        new, its, ok = self.diffuse(space, g, c, h, f)
        return new, its, ok, None, state

    @property
    def base(self) -> "AbstractStepper":
        """The time-stepping scheme itself, under any wrappers (`Positive`, `PerFactor`)."""
        return self

    def positivity(self, state):
        """(amount clipped (S,), failed (S,) bool) of the last step from the stepper's state, or None
        when no limiter is applied (see `Positive`)."""
        return None

    def rebuild(self, base: "AbstractStepper") -> "AbstractStepper":
        """The same composition of wrappers around another scheme."""
        return base


def _rhs(space, g, c, f):
    Lc = space.apply(c, g)
    return Lc if f is None else Lc + f


class ForwardEuler(AbstractStepper):
    order: int = eqx.field(static=True, default=1, init=False)
    loop_factors: bool = eqx.field(static=True, default=False, init=False)

    def plan(self, rho_max, h_max):
        if h_max * rho_max > 2.0 * (1 + RTOL):
            raise StabilityError(
                f"forward Euler is unstable at dt = {_fmt(h_max)} s: the largest stable dt is "
                f"{_fmt(2.0 / rho_max)} s (2 / rho, rho = {_fmt(rho_max)} 1/s); use method='rkl2' or 'cn' for larger steps")
        return self

    def limit(self, rho):
        return 2.0 / rho

    def diffuse(self, space, g, c, h, f=None):
        return c + h * _rhs(space, g, c, f), jnp.zeros((), jnp.int32), jnp.array(True)


def rkl2_coefficients(s: int) -> np.ndarray:
    """Rows (mu_j, nu_j, mu~_j, gamma~_j) for j = 2..s, and mu~_1, of RKL2 with s stages."""
    b = np.full(s + 1, 1.0 / 3.0)
    for j in range(2, s + 1):
        b[j] = (j * j + j - 2) / (2.0 * j * (j + 1))
    a = 1.0 - b
    w1 = 4.0 / (s * s + s - 2)
    rows = []
    for j in range(2, s + 1):
        mu = (2 * j - 1) / j * b[j] / b[j - 1]
        nu = -(j - 1) / j * b[j] / b[j - 2]
        rows.append((mu, nu, mu * w1, -a[j - 1] * mu * w1))
    return np.array(rows), b[1] * w1


def rkl2_stages(h_rho: float) -> int:
    """Fewest stages s >= 2 with h rho <= (s^2 + s - 2) / 2, up to a relative RTOL."""
    s = max(2, math.ceil((-1.0 + math.sqrt(9.0 + 8.0 * h_rho)) / 2.0))
    while s > 2 and h_rho <= ((s - 1) ** 2 + (s - 1) - 2) / 2.0 * (1 + RTOL):
        s -= 1
    return s


class RKL2(AbstractStepper):
    """s = 0 picks the stage count from the step and the spectral-radius bound at `simulate` time."""

    s: int = eqx.field(static=True, default=0)

    @property
    def stages(self) -> int:
        return self.s

    def plan(self, rho_max, h_max):
        need = rkl2_stages(h_max * rho_max)
        if self.s == 0:
            return RKL2(s=need)
        if self.s < need:
            raise StabilityError(
                f"RKL2 with {self.s} stages is unstable at dt = {_fmt(h_max)} s: it needs {need} stages, "
                f"or dt <= {_fmt(self.limit(rho_max))} s")
        return self

    def limit(self, rho):
        return (self.s * self.s + self.s - 2) / (2.0 * rho)

    def diffuse(self, space, g, c, h, f=None):
        # Stages in increment form W_j = Y_j - Y_0: since L is linear and f constant,
        # L Y_j + f = L W_j + F0 with F0 = L Y_0 + f, and
        #   W_j = mu_j W_{j-1} + nu_j W_{j-2} + mu~_j h L W_{j-1} + (mu~_j + gamma~_j) h F0,
        # which reads three fields per stage instead of four (the pass is bandwidth-bound).
        rows, mut1 = rkl2_coefficients(self.s)
        F0 = h * _rhs(space, g, c, f)
        w1 = mut1 * F0

        def stage(carry, coef):
            w1, w2 = carry
            mu, nu, mut, gt = coef[0], coef[1], coef[2], coef[3]
            w = mu * w1 + nu * w2 + mut * h * space.apply(w1, g) + (mut + gt) * F0
            return (w, w1), None

        (w, _), _ = jax.lax.scan(stage, (w1, jnp.zeros_like(c)), jnp.asarray(rows, c.dtype))
        return c + w, jnp.zeros((), jnp.int32), jnp.array(True)


def _pcg(matvec, b, diag, tol, maxiter, x0=None):
    """Jacobi-preconditioned CG on fields (S, ...), each factor its own system, from x0 (default 0);
    returns (x, (iterations, converged))."""
    axes = tuple(range(1, b.ndim))
    dot = lambda u, v: jnp.sum(u * v, axis=axes, keepdims=True)  # noqa: E731
    # a node with no coupling and no loss (outside a masked grid's tissue when every loss is per
    # region) has a zero row, a zero right-hand side and a zero diagonal: precondition it by 1, not 0/0
    diag = jnp.where(diag > 0, diag, 1.0)
    x = jnp.zeros_like(b) if x0 is None else x0
    r = b if x0 is None else b - matvec(x0)
    z = r / diag
    p = z
    rz = dot(r, z)
    stop = (tol * jnp.sqrt(dot(b, b))) ** 2

    def active(r):
        return dot(r, r) > stop

    def cond(state):
        k, _, r, _, _ = state
        return (k < maxiter) & jnp.any(active(r))

    def body(state):
        k, x, r, p, rz = state
        on = active(r)
        Ap = matvec(p)
        pAp = dot(p, Ap)
        alpha = jnp.where(on & (pAp > 0), rz / jnp.where(pAp > 0, pAp, 1.0), 0.0)
        x = x + alpha * p
        r = r - alpha * Ap
        z = r / diag
        rz_new = dot(r, z)
        beta = jnp.where(on & (rz > 0), rz_new / jnp.where(rz > 0, rz, 1.0), 0.0)
        p = jnp.where(on, z + beta * p, p)
        return k + 1, x, r, p, jnp.where(on, rz_new, rz)

    k, x, r, _, _ = jax.lax.while_loop(cond, body, (jnp.zeros((), jnp.int32), x, r, p, rz))
    converged = jnp.all(dot(r, r) <= stop)   # a NaN residual stops the loop and is not converged
    return x, (k, converged)


def _poison(x, ok):
    """x where ok, else NaN: the failure of a backward (adjoint or transposed) solve as a value."""
    return jnp.where(ok, x, jnp.nan)


def _linear_solve(matvec, rhs, diag, tol, maxiter, x0=None):
    """Solve the symmetric system matvec(x) = rhs by `_pcg` under `lax.custom_linear_solve` (JAX
    differentiates the solve by solves, not through the iterations): (x, (iterations, converged)).
    Reverse mode's transposed solve returns NaN where it did not converge (every factor of the system:
    the flag is one for all): a gradient has no status to carry the failure, and a NaN gradient stops
    an optimiser where a wrong one would not. Forward mode (jvp, jacfwd) solves the tangents with the
    values' own solve (JAX's rule for custom_linear_solve), whose flags do not leave the jvp: a
    tangent solve that fails where the value's converged is not flagged."""
    def run(mv, b):
        return _pcg(mv, b, diag, tol, maxiter, x0)

    def run_transposed(mv, b):
        x, (its, ok) = _pcg(mv, b, diag, tol, maxiter, None)
        return _poison(x, ok), (its, ok)
    return jax.lax.custom_linear_solve(matvec, rhs, run, run_transposed, symmetric=True, has_aux=True)


class CrankNicolson(AbstractStepper):
    """tol: CG tolerance on ||r|| / ||b|| (default 1e-10 in float64, 1e-5 in float32)."""

    tol: float | None = eqx.field(static=True, default=None)
    maxiter: int = eqx.field(static=True, default=2000)

    def diffuse(self, space, g, c, h, f=None):
        tol = self.tol or (1e-10 if c.dtype == jnp.float64 else 1e-5)
        m = space.cg_mass(c.dtype)
        m = lead_ones(m, c.ndim)
        diag = m * (1 + 0.5 * h * space.diagonal(g))
        diag = jnp.broadcast_to(diag, c.shape)

        def matvec(x):
            return m * (x - 0.5 * h * space.apply(x, g))

        rhs = h * m * _rhs(space, g, c, f)
        delta, (its, ok) = _linear_solve(matvec, rhs, diag, tol, self.maxiter)
        new = c + delta
        # CG leaves a residual of order tol whose sum is a change of mass. Spreading
        # the defect in proportion to |c| restores the discrete balance
        #   sum m c' + h/2 sum m s c' = sum m c - h/2 sum m s c + h sum m f
        # (s: a diagonal sink such as Robin boundaries, zero otherwise) to round-off
        # without changing any sign.
        inflow = 0.0 if f is None else h * space.total(f)
        sink = space.sink(g)
        defect = (space.total(c) + inflow - space.total(new)
                  - (0.0 if sink is None else 0.5 * h * (space.total(sink * c) + space.total(sink * new))))
        weight = space.total(jnp.abs(new)) + (0.0 if sink is None else 0.5 * h * space.total(sink * jnp.abs(new)))
        theta = jnp.where(weight > 0, defect / jnp.where(weight > 0, weight, 1.0), 0.0)
        new = new + theta.reshape((-1,) + (1,) * (c.ndim - 1)) * jnp.abs(new)
        return new, its, ok


def linear_forcing(first_half, second_half):
    """(mean, slope) of a source rate over a step from its averages over the two half-steps: the
    linear function with that mean and end values mean -+ slope, slope = second - first clipped
    to [-mean, mean] node by node so that no stage sees a negative source."""
    mean = 0.5 * (first_half + second_half)
    return mean, jnp.clip(second_half - first_half, -mean, mean)


def _trbdf2_solves(vjp_arg, space, h, guess1, tol, maxiter, adjoint_tol=None):
    """The two TR-BDF2 solves with the matrix A = m (I - dh L): (d1, d2, iterations, converged) for
    vjp_arg = (g, c, f1, f2, f3) (forcings None or fields), with
        A d1 = m dh (2 L c + f1 + f2),      A d2 = m (h w / dh d1 + dh (L c + f3))."""
    g, c, f1, f2, f3 = vjp_arg
    dh, hw, m, A, diag = _trbdf2_matrix(space, g, c, h)
    Lc = space.apply(c, g)
    z = lambda f: 0.0 if f is None else f  # noqa: E731
    d1, (it1, ok1) = _pcg(A, m * dh * (2 * Lc + z(f1) + z(f2)), diag, tol, maxiter, guess1)
    d2, (it2, ok2) = _pcg(A, m * (hw / dh * d1 + dh * (Lc + z(f3))), diag, tol, maxiter, d1 / TRBDF2.GAMMA)
    return d1, d2, it1 + it2, ok1 & ok2


def _trbdf2_matrix(space, g, c, h):
    d = 0.5 * TRBDF2.GAMMA
    w = math.sqrt(2.0) / 4.0
    dh = d * h
    m = space.cg_mass(c.dtype)
    m = lead_ones(m, c.ndim)
    diag = jnp.broadcast_to(m * (1 + dh * space.diagonal(g)), c.shape)
    return dh, h * w, m, (lambda x: m * (x - dh * space.apply(x, g))), diag


#: name of the step's two increments: what the checkpointed step of the discrete adjoint saves
INCREMENTS = "trbdf2_increments"

_adjoint_solves = eqx.filter_custom_vjp(_trbdf2_solves)


@_adjoint_solves.def_fwd
def _adjoint_fwd(perturbed, vjp_arg, space, h, guess1, tol, maxiter, adjoint_tol):
    out = _trbdf2_solves(vjp_arg, space, h, guess1, tol, maxiter)
    # named, so that the step checkpointed with save_only_these_names(INCREMENTS) keeps them and the
    # backward pass recomputes the rest of the step but not the solves
    d1, d2 = checkpoint_name(out[0], INCREMENTS), checkpoint_name(out[1], INCREMENTS)
    return (d1, d2) + tuple(out[2:]), (d1, d2)   # the step's increments: no stage is recomputed backwards


@_adjoint_solves.def_bwd
def _adjoint_bwd(residuals, grad_obj, perturbed, vjp_arg, space, h, guess1, tol, maxiter, adjoint_tol):
    """Discrete adjoint of the two solves: A is symmetric (lumped mass inner product), so the
    backward pass is two solves with A and two transposed operator applications, no recomputation.
    The solves start from zero: starting them from the next step's adjoint solutions (passed back
    through a cotangent channel) was tried and saved 1 of 14 iterations (fit.py's problem), as the
    adjoint between observations is a decaying transient, not a slowly changing quasi-steady state."""
    d1, d2 = residuals
    g, c, f1, f2, f3 = vjp_arg
    bar1, bar2 = grad_obj[0], grad_obj[1]
    zero = jnp.zeros_like(c)
    bar1 = zero if bar1 is None else bar1
    bar2 = zero if bar2 is None else bar2
    dh, hw, m, A, diag = _trbdf2_matrix(space, g, c, h)
    mu2, (_, ok2) = _pcg(A, bar2, diag, adjoint_tol, maxiter, None)
    mu1, (_, ok1) = _pcg(A, bar1 + hw / dh * m * mu2, diag, adjoint_tol, maxiter, None)
    # a backward solve that did not converge makes every cotangent of the step NaN: a gradient has no
    # status to carry the failure, and a NaN gradient stops an optimiser where a wrong one would not
    ok = ok1 & ok2
    y1, y2 = _poison(dh * m * mu1, ok), _poison(dh * m * mu2, ok)
    # d/dx of apply(x, g) is L^T, applied as m L(y / m) (self-adjoint in the m inner product: gathers,
    # not JAX's scatter-add transpose); d/dg is bilinear, one vjp with x fixed
    _, vjp1 = jax.vjp(lambda gg: space.apply(d1 + 2 * c, gg), g)
    _, vjp2 = jax.vjp(lambda gg: space.apply(d2 + c, gg), g)
    (gb1,), (gb2,) = vjp1(y1), vjp2(y2)
    g_bar = jax.tree.map(lambda a, b: a + b, gb1, gb2)
    c_bar = 2 * space.apply_transpose(y1, g) + space.apply_transpose(y2, g)
    fb = lambda f, y: None if f is None else y  # noqa: E731
    return g_bar, c_bar, fb(f1, y1), fb(f2, y1), fb(f3, y2)


class TRBDF2(AbstractStepper):
    """TR-BDF2 (Bank et al. 1985; Hosea & Shampine 1996) on dc/dt = L c + f with f constant over the
    step. tol: CG tolerance on ||r|| / ||b|| (default 1e-10 in float64, 1e-5 in float32).
    `diffuse_with_error` also returns h sum_i (b_i - bhat_i) k_i, the difference to the
    embedded third-order solution (local error estimate of order h^3)."""

    tol: float | None = eqx.field(static=True, default=None)
    maxiter: int = eqx.field(static=True, default=2000)
    #: reverse mode by the discrete adjoint of the step's two solves (`simulate(adjoint="discrete")`);
    #: forward mode (jvp, jacfwd) needs it off
    adjoint: bool = eqx.field(static=True, default=False)
    #: CG tolerance of the discrete adjoint's two backward solves (default max(tol, ADJOINT_TOL))
    adjoint_tol: float | None = eqx.field(static=True, default=None)
    #: takes the sources as (mean, slope) over the step (`linear_forcing`)
    linear_sources: bool = eqx.field(static=True, default=True, init=False)
    #: factors in one batch: one CG loop for all (default scenario, 7 d at rtol 1e-3: 1.44 s batched
    #: against 2.23 s one factor after another, benchmarks/run_default.py)
    loop_factors: bool = eqx.field(static=True, default=False, init=False)

    GAMMA = 2.0 - math.sqrt(2.0)
    #: the backward solves' default floor. The forward solves run to 1e-10 (float64) for the budget and
    #: the exact fixed point; a gradient needs less: on benchmarks/fit.py's problem the sensitivities at
    #: 1e-6 agree with those at 1e-10 to 1e-8 relative (at 1e-4 to 3e-8, at 1e-3 to 4e-7), far inside
    #: what central differences resolve, with 7 CG iterations per backward solve against 14.
    ADJOINT_TOL = 1e-6

    def diffuse(self, space, g, c, h, f=None):
        new, its, ok, _, _ = self.step(space, g, c, h, f, None)
        return new, its, ok

    def diffuse_with_error(self, space, g, c, h, f=None):
        new, its, ok, err, _ = self.step(space, g, c, h, f, None, error=True)
        return new, its, ok, err

    def init(self, c):
        """The last step's increment and length (S,): CG starts from it, scaled to the new step (in the
        quasi-steady phase the increment changes slowly, so the solves start close to their answer)."""
        return jnp.zeros_like(c), jnp.zeros(c.shape[:1], c.dtype)

    def step(self, space, g, c, h, f, state, *, error: bool = False):
        tol = self.tol or (1e-10 if c.dtype == jnp.float64 else 1e-5)
        d = 0.5 * self.GAMMA                  # = (1 - gamma) / (2 - gamma)
        w = math.sqrt(2.0) / 4.0               # = (1 - d) / 2
        m = space.cg_mass(c.dtype)
        m = lead_ones(m, c.ndim)
        dh = d * h
        diag = jnp.broadcast_to(m * (1 + dh * space.diagonal(g)), c.shape)

        def matvec(x):
            return m * (x - dh * space.apply(x, g))

        def solve(rhs, x0):
            return _linear_solve(matvec, rhs, diag, tol, self.maxiter, x0)

        # forcing at the stage times c = (0, gamma, 1): f_i = mean + (2 c_i - 1) slope with a linear
        # reconstruction (mean, slope) of the sources over the step (see `linear_forcing`); since
        # sum_i b_i (2 c_i - 1) = 0 it adds exactly h * mean, and a stiff mode slaved to the source
        # follows it to second order instead of lagging by h/2 behind the step average
        if isinstance(f, tuple):
            mean, slope = f
            f1, f2, f3 = mean - slope, mean + (2 * self.GAMMA - 1) * slope, mean + slope
        else:
            mean = f1 = f2 = f3 = f
        k1 = _rhs(space, g, c, f1)
        # trapezoidal stage: Y2 = c + d1, d1 = dh (k1 + L Y2 + f2): (I - dh L) d1 = dh (k1 + L c + f2)
        b1 = k1 if f is None or not isinstance(f, tuple) else k1 + (f2 - f1)
        guess1 = dh * (k1 + b1)
        if state is not None:
            prev, h_prev = state
            scale = jnp.where(h_prev > 0, h / jnp.where(h_prev > 0, h_prev, 1.0), 0.0)
            scale = scale.reshape((-1,) + (1,) * (c.ndim - 1))
            guess1 = jnp.where(scale > 0, self.GAMMA * scale * prev, guess1)
        if self.adjoint:
            d1, d2, its, ok = _adjoint_solves((g, c, f1, f2, f3), space, jax.lax.stop_gradient(h),
                                              jax.lax.stop_gradient(guess1), tol, self.maxiter,
                                              max(tol, self.ADJOINT_TOL) if self.adjoint_tol is None else self.adjoint_tol)
            it1, it2, ok1, ok2 = its, 0, ok, True
            k2 = d1 / dh - k1
        else:
            d1, (it1, ok1) = solve(m * dh * (k1 + b1), guess1)
            k2 = d1 / dh - k1
            # BDF2 stage: Y3 = c + d2, d2 = h w (k1 + k2) + dh (L Y3 + f3):
            # (I - dh L) d2 = h w (k1 + k2) + dh (L c + f3)
            k0_3 = k1 if not isinstance(f, tuple) else k1 + (f3 - f1)
            d2, (it2, ok2) = solve(m * (h * w * (k1 + k2) + dh * k0_3), d1 / self.GAMMA)
        k3 = (d2 - h * w * (k1 + k2)) / dh
        new = c + d2
        # mass balance of the step (see CrankNicolson): total(new) = total(c) + h (w T1 + w T2 + d T3),
        # T_i = total(k_i) = total(f) - total(r Y_i)
        sink = space.sink(g)
        inflow = 0.0 if f is None else space.total(mean)
        if sink is None:
            flows = h * inflow
        else:
            y2 = c + d1
            flows = h * (inflow - w * space.total(sink * c) - w * space.total(sink * y2)) \
                - dh * space.total(sink * new)
        defect = space.total(c) + flows - space.total(new)
        weight = space.total(jnp.abs(new)) + (0.0 if sink is None else dh * space.total(sink * jnp.abs(new)))
        theta = jnp.where(weight > 0, defect / jnp.where(weight > 0, weight, 1.0), 0.0)
        new = new + theta.reshape((-1,) + (1,) * (c.ndim - 1)) * jnp.abs(new)
        new_state = None if state is None else (d2, jnp.full(c.shape[:1], h, c.dtype))
        if not error:
            return new, it1 + it2, ok1 & ok2, None, new_state
        bh1, bh2, bh3 = (1 - w) / 3, (3 * w + 1) / 3, d / 3
        est = h * ((w - bh1) * k1 + (w - bh2) * k2 + (d - bh3) * k3)
        # filtered as in Shampine's ode23tb: (I - dh L)^{-1} est, so that stiff components, which the
        # L-stable step damps, do not inflate the estimate (a loose solve: 1e-2 or 20 iterations is plenty)
        err, (it3, _) = jax.lax.stop_gradient(_pcg(matvec, m * est, diag, max(tol, 1e-2), 20, est))
        return new, it1 + it2 + it3, ok1 & ok2, err, new_state


METHODS = {"euler": ForwardEuler, "rkl2": RKL2, "cn": CrankNicolson, "trbdf2": TRBDF2}


def make_stepper(method) -> AbstractStepper:
    if isinstance(method, AbstractStepper):
        return method
    if method not in METHODS:
        raise ValueError(f"method {method!r} is not one of {sorted(METHODS)} (or a stepper instance)")
    return METHODS[method]()
