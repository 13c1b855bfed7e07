"""`simulate`: the front door of the solver.

One step of length h is the Strang splitting

    c <- R(h/2) D_f(h) R(h/2) c

of the pointwise reactions R (decay, uptake, clearance exactly, see
reactions.py; saturable uptake and ECM binding by kinetics.py) and a diffusion
stepper D_f with the sources' forcing f, the step-average of their rates,
which adds exactly the amount the profiles release in the step (see
steppers.py): second order when D is. With ECM binding the sources enter the
two reaction half-steps instead (each its half-step's amount), where the stiff
free/bound exchange takes them up (exactly while linear); the Robin boundary sink is part of
the diffusion operator.
The host plans the steps (save times are hit exactly) and, for explicit
steppers, the stability; the compiled program is a scan over save intervals
of a scan over checkpointed steps, so reverse-mode memory grows with the
number of steps, not with stages or CG iterations.
"""

from __future__ import annotations

import collections
import math
from typing import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .model import Model
from .params import Params
from .kinetics import step as kinetics_step
from .reactions import react
from .steppers import RTOL, AbstractStepper, make_stepper

SUCCESS, UNSTABLE, CG_FAILED, NONFINITE, NEGATIVE = 0, 1, 2, 3, 4
STATUS_MESSAGES = {
    SUCCESS: "success",
    UNSTABLE: "time step past the explicit stepper's stability limit for these parameters",
    CG_FAILED: "conjugate gradients did not converge within maxiter",
    NONFINITE: "non-finite values in the solution",
    NEGATIVE: ("a step removed more of a factor than the field held (negative total; the positivity "
               "limiter cannot repair it): take a smaller dt, or method='rkl2' against strong sinks"),
}

#: Number of times the compiled program was traced, by stepper name (tests use it to show no retracing).
TRACE_COUNT: collections.Counter = collections.Counter()


class Solution(eqx.Module):
    """ts: save times (T,); ys: observe(c, t) at each save time (leading axis T);
    final: the free field at t_end (S, *shape); bound: the bound field (with binding) or None; stats: steps, stages, cg_iterations and the
    amount per factor that the positivity limiter moved ("limited");
    budget: cumulative amounts per factor (secreted, decayed, taken_up) when requested;
    status: 0 on success, else a key of STATUS_MESSAGES (an array, so it survives jit and vmap)."""

    ts: jax.Array
    ys: object
    final: jax.Array
    bound: jax.Array | None
    stats: dict
    budget: dict | None
    status: jax.Array
    metrics: object = None

    @property
    def ok(self) -> bool:
        return bool(np.all(np.asarray(self.status) == SUCCESS))

    @property
    def message(self) -> str:
        codes = sorted(set(np.asarray(self.status).reshape(-1).tolist()))
        return "; ".join(STATUS_MESSAGES[int(c)] for c in codes)


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


def _plan(t_end, dt, save_at, t0=0.0):
    """Intervals between save points: steps per interval and their length (hit every save time exactly)."""
    for key, v in (("t_end", t_end), ("dt", dt)):
        if not (isinstance(v, (int, float, np.floating, np.integer)) and math.isfinite(v) and v > 0):
            raise ValueError(f"{key} = {v!r}; allowed: a finite number > 0 (s)")
    if not (math.isfinite(t0) and 0 <= t0 < t_end):
        raise ValueError(f"t0 = {t0!r}; allowed: a start time in [0, t_end = {t_end}) s")
    save = np.atleast_1d(np.asarray([t_end] if save_at is None else save_at, dtype=float))
    if save.ndim != 1 or save.size == 0:
        raise ValueError(f"save_at must be a non-empty 1-D list of times, got shape {save.shape}")
    ok = np.isfinite(save) & (save > t0 if t0 > 0 else save >= 0) & (save <= t_end * (1 + 1e-12))
    if not np.all(ok):
        raise ValueError(f"save_at contains {float(save[~ok][0])!r}; allowed: times in "
                         f"{'(' if t0 > 0 else '['}{t0:g}, t_end = {t_end:g}] s")
    if np.any(np.diff(save) <= 0):
        raise ValueError(f"save_at must be strictly increasing, got {save.tolist()}")
    points = save if save[-1] >= t_end * (1 - 1e-12) else np.append(save, t_end)
    starts = np.concatenate([[t0], points[:-1]])
    lengths = points - starts
    n = np.where(lengths > 0, np.ceil(lengths / dt * (1 - 1e-12)), 0).astype(np.int64)
    h = np.where(n > 0, lengths / np.maximum(n, 1), 0.0)
    return save, starts, h, n


def step_lengths(t_end: float, dt: float, save_at=None, t0: float = 0.0) -> np.ndarray:
    """The step length (s) `simulate` takes in each save interval: the interval cut into equal steps
    no longer than dt (0 for an empty interval)."""
    return _plan(float(t_end), float(dt), save_at, float(t0))[2]


def _initial(x, model, dtype, key):
    """An initial field (S, *shape), zero by default, checked on the host."""
    if x is None:
        return jnp.zeros(model.state_shape, dtype)
    x = jnp.asarray(x, dtype)
    if x.shape != model.state_shape:
        raise ValueError(f"{key} has shape {x.shape}; the model needs {model.state_shape} (factors, *space)")
    if not _is_traced(x):
        arr = np.asarray(x)
        if not np.all(np.isfinite(arr)):
            idx = tuple(int(i) for i in np.argwhere(~np.isfinite(arr))[0])
            raise ValueError(f"{key}{list(idx)} = {arr[idx]}; allowed: finite values")
    return x


def _is_traced(tree) -> bool:
    return any(isinstance(x, jax.core.Tracer) for x in jax.tree.leaves(tree))


@eqx.filter_jit
def spectral_bound(model: Model, params: Params):
    """Upper bound (S,) on the spectral radius of the operator the diffusion stepper integrates,
    M^{-1} (K(D) + R_robin) per factor: diffusion and every sink inside the operator (today the
    Robin boundary terms; decay, uptake, clearance and the reactions are integrated exactly in
    their own sub-step and need no bound). Gershgorin: max_i |d_i + r_i| + sum_j |w_ij|."""
    return model.space.rate_bound(model.operator(params))


def normalise(params: Params, dtype=None) -> Params:
    """Every floating leaf as a (non-weakly-typed) array of one dtype, that of params.D unless given:
    Python floats, NumPy scalars and 0-d arrays then reach the compiled program alike, so changing
    one of them for another never retraces it."""
    dtype = jnp.dtype(dtype or params.D.dtype)

    def cast(x):
        floating = isinstance(x, (float, np.floating)) or (
            hasattr(x, "dtype") and jnp.issubdtype(x.dtype, jnp.floating))
        return jnp.asarray(x, dtype) if floating else x

    return jax.tree.map(cast, params)


def plan(model: Model, params: Params, *, dt: float, method="rkl2") -> AbstractStepper:
    """The stepper `simulate` would use for these (concrete) params and step, e.g. RKL2 with its
    stage count; pass it as `method=` under jit, vmap or grad (take the largest D of a batch)."""
    rho = float(jnp.max(spectral_bound(model, params)))
    return make_stepper(method).plan(rho, float(dt))


def simulate(model: Model, params: Params, *, t_end: float, dt: float, save_at=None, method="rkl2",
             observe: Callable | None = None, c0=None, b0=None, budget: bool = False, positive: bool = True,
             checkpoint: bool = True, unroll: int = 1, factor_loop: bool | None = None,
             t0: float = 0.0, metrics=None, metrics0=None) -> Solution:
    """Integrate the model from c0 (default zero) at time t0 (default 0) to t_end.

    t_end, dt, save_at: seconds; save intervals are cut into equal steps no longer than dt.
    method: "rkl2" (default), "cn", "euler" or a stepper instance (RKL2(s=...), CrankNicolson(tol=...)).
    observe: f(c, t) -> pytree saved at each save time instead of the full field c (S, *shape).
    budget: also return cumulative amounts per factor: secreted, decayed, taken_up, cleared
    (and to_boundary with Robin coefficients).
    c0: initial state (S, *shape); default zero. b0: initial bound factor with binding.
    With binding, observe is called as f(c, t, b) and the default saves (c, b); Solution.bound
    is the bound field at t_end and the budget adds degraded_bound.
    positive: apply the conservative positivity limiter after each diffusion step (see
    `positivity_limiter`); the amount it moved is stats["limited"]. Pass False for signed
    data (verification modes): the equations are linear and accept them.
    factor_loop: diffuse the factors one after another (`lax.map`) rather than as one batch;
    factors do not couple in diffusion, and one factor's stages stay in cache (default: on
    for several factors with RKL2 and CN, off for forward Euler's single pass; measured in
    benchmarks/README.md).

    metrics: an accumulator updated after every step, independent of save_at (running
    integrals, maxima, time above a threshold): an object with `init(c, b, t) -> acc` and
    `update(acc, c0, b0, c1, b1, t0, t1) -> acc` on fields (S, *shape) (b is None without
    binding), e.g. `solver.Exposure`; its final value is `Solution.metrics`. metrics0: an
    accumulator value to continue from (a run cut into chunks); default `metrics.init(c0, b0, t0)`.

    Under jax.jit / vmap / grad the stage count of RKL2 cannot be read from traced
    parameters: pass method=RKL2(s=...) (see `solver.rkl2_stages`) or call simulate
    outside the transformation. A step that a traced parameter value makes unstable
    is reported in `Solution.status`.
    """
    if not isinstance(model, Model):
        raise TypeError(f"simulate needs a solver.Model, got {type(model).__name__}")
    if not isinstance(params, Params):
        raise TypeError(f"simulate needs solver.Params, got {type(params).__name__}")
    model.check(params)
    params = normalise(params)
    stepper = make_stepper(method)
    save, starts, h, n = _plan(float(t_end), float(dt), save_at, float(t0))
    if not _is_traced(params):
        rho = float(jnp.max(spectral_bound(model, params)))
        stepper = stepper.plan(rho, float(h.max()))
    elif stepper.stages == 0:
        raise ValueError("RKL2 needs a fixed stage count when params are traced (inside jit/vmap/grad): "
                         "pass method=solver.plan(model, params, dt=dt), computed outside the transformation")
    dtype = params.D.dtype
    c0 = _initial(c0, model, dtype, "c0")
    uniform = bool(np.all(n == n.max()))
    b0 = _initial(b0, model, dtype, "b0") if params.binding is not None else None
    if metrics is not None and metrics0 is None:
        metrics0 = metrics.init(c0, b0, jnp.asarray(t0, dtype))
    ys, final, bound, stats, bud, status, acc_m = _run(model, params, c0, b0, metrics, metrics0, jnp.asarray(starts, dtype), jnp.asarray(h, dtype),
                                         jnp.asarray(n, jnp.int32), stepper=stepper, n_max=int(n.max()),
                                         uniform=uniform, observe=observe, budget=budget, positive=positive,
                                         checkpoint=checkpoint, n_saves=len(save), unroll=unroll,
                                         factor_loop=(model.n_factors > 1 and stepper.loop_factors) if factor_loop is None
                                         else factor_loop)
    return Solution(ts=jnp.asarray(save, dtype), ys=ys, final=final, bound=bound, stats=stats,
                    budget=bud if budget else None, status=status, metrics=acc_m)


@eqx.filter_jit
def _run(model, params, c0, b0, metrics, metrics0, starts, hs, ns, *, stepper: AbstractStepper, n_max, uniform, observe, budget,
         positive, checkpoint, n_saves, unroll, factor_loop):
    TRACE_COUNT[type(stepper).__name__] += 1
    space = model.space
    g = model.operator(params)
    robin = model.has_robin(params)
    rates = model.loss_rates(params)
    kappa = sum(rates.values())
    shares = {k: r / jnp.where(kappa > 0, kappa, 1.0) for k, r in rates.items()}
    zero = jnp.zeros(c0.shape[0], c0.dtype)

    sat, bnd = params.saturable, params.binding
    nonlinear = sat is not None or bnd is not None
    if nonlinear:
        col = lambda x: x.reshape((-1,) + (1,) * len(space.shape))  # noqa: E731
        kin = dict(kappa=kappa, V=0.0 if sat is None else space.per_node(sat.Vmax),
                   Km=1.0 if sat is None else col(sat.Km), kon=0.0 if bnd is None else col(bnd.kon),
                   koff=0.0 if bnd is None else col(bnd.koff), B=0.0 if bnd is None else space.per_node(bnd.capacity),
                   kdeg=0.0 if bnd is None else col(bnd.kdeg))

    # With ECM binding the sources enter the reaction sub-steps, where the stiff free/bound exchange
    # takes them up (exactly while the kinetics are linear; kinetics.py); otherwise the diffusion
    # stepper, whose fixed point is then the exact discrete steady state next to a point source.
    source_in_reactions = bnd is not None

    def half_react(c, b, h, E, acc, f=None):
        """Reactions over h: exact exponential when linear, kinetics.step (exponential Rosenbrock-Euler,
        exact for linear kinetics) with saturable uptake or binding, with the source rate f when given.
        Each mechanism's loss goes to its budget entry."""
        if not nonlinear:
            new = c * E
            if budget:
                removed = c - new  # >= 0 for c >= 0; each mechanism takes its share rate / kappa of it
                acc = dict(acc, **{k: acc[k] + space.total(removed * shares[k]) for k in shares})
            return new, b, acc
        new, nb, losses = kinetics_step(c, jnp.zeros_like(c) if b is None else b, h, 0.0 if f is None else f, **kin)
        if budget:
            acc = dict(acc, **{k: acc[k] + space.total(losses["linear"] * shares[k]) for k in shares})
            acc["taken_up"] = acc["taken_up"] + space.total(losses["saturable"])
            if b is not None:
                acc["degraded_bound"] = acc["degraded_bound"] + space.total(losses["degraded"])
        return new, (None if b is None else nb), acc

    def forcing(t0, h):
        """Average source rate over [t0, t0 + h] as a concentration rate field, or None."""
        if not model.sources:
            return None
        f = jnp.zeros(c0.shape, c0.dtype)
        for src, prof in zip(model.sources, params.sources):
            f = src.add(f, (prof.cumulative(t0 + h) - prof.cumulative(t0)) / jnp.where(h > 0, h, 1.0))
        return f

    def diffuse(c, h, f):
        if not factor_loop:
            return stepper.diffuse(space, g, c, h, f)
        one = lambda x: x[:, None]  # noqa: E731  keep a factor axis of length 1
        xs = (one(c), jax.tree.map(one, g), None if f is None else one(f))
        new, k, conv = jax.lax.map(lambda a: stepper.diffuse(space, a[1], a[0], h, a[2]), xs)
        return new[:, 0], jnp.sum(k).astype(jnp.int32), jnp.all(conv)

    def step(carry, t0, h, E):
        c, b, acc, its, cg_ok, ok, limited, macc = carry
        c_start, b_start = c, b
        if source_in_reactions:
            f1, f2 = forcing(t0, 0.5 * h), forcing(t0 + 0.5 * h, 0.5 * h)
            f = None if f1 is None else 0.5 * (f1 + f2)
        else:
            f1 = f2 = None
            f = forcing(t0, h)
        c, b, acc = half_react(c, b, 0.5 * h, E, acc, f1)
        before = space.total(c)
        c, k, converged = diffuse(c, h, None if source_in_reactions else f)
        if budget and robin:  # diffusion conserves; what it lost went through the Robin boundaries
            inflow = zero if (f is None or source_in_reactions) else h * space.total(f)
            acc = dict(acc, to_boundary=acc["to_boundary"] + before + inflow - space.total(c))
        if positive:
            c, moved, failed = positivity_limiter(space, c)
            limited = limited + moved
            ok = ok & ~jnp.any(failed)
        c, b, acc = half_react(c, b, 0.5 * h, E, acc, f2)
        if budget and f is not None:
            acc = dict(acc, secreted=acc["secreted"] + h * space.total(f))
        if metrics is not None:
            macc = metrics.update(macc, c_start, b_start, c, b, t0, t0 + h)
        return c, b, acc, its + k, cg_ok & converged, ok, limited, macc

    if checkpoint:
        step = jax.checkpoint(step)

    def interval(carry, x):
        t_start, h, n = x
        E = react(jnp.ones((), c0.dtype), kappa, 0.5 * h)  # exact half-step reaction factor, once per interval

        def body(carry, i):
            t0 = t_start + i.astype(h.dtype) * h
            if uniform:
                return step(carry, t0, h, E), None
            return jax.lax.cond(i < n, lambda c: step(c, t0, h, E), lambda c: c, carry), None

        carry, _ = jax.lax.scan(body, carry, jnp.arange(n_max), unroll=unroll)
        c, b = carry[0], carry[1]
        t = t_start + n.astype(h.dtype) * h
        if b is None:
            out = c if observe is None else observe(c, t)
        else:
            out = (c, b) if observe is None else observe(c, t, b)
        return carry, out

    acc0 = {"secreted": zero, **{k: zero for k in rates}, **({"to_boundary": zero} if robin else {}),
            **({"degraded_bound": zero} if bnd is not None else {})}
    init = (c0, b0, acc0, jnp.zeros((), jnp.int32), jnp.array(True), jnp.array(True), zero, metrics0)
    (c, b, acc, its, cg_ok, pos_ok, limited, macc), ys = jax.lax.scan(interval, init, (starts, hs, ns))
    ys = jax.tree.map(lambda y: y[:n_saves], ys)
    rho = space.rate_bound(g)
    unstable = jnp.any(jnp.max(hs) > stepper.limit(rho) * (1 + RTOL))
    cg_failed = ~cg_ok
    nonfinite = ~jnp.all(jnp.isfinite(c)) | (b is not None and ~jnp.all(jnp.isfinite(b)))
    status = jnp.where(nonfinite, NONFINITE, jnp.where(unstable, UNSTABLE, jnp.where(
        cg_failed, CG_FAILED, jnp.where(pos_ok, SUCCESS, NEGATIVE))))
    steps = jnp.sum(ns)
    stats = {"steps": steps, "stages": steps * stepper.stages, "cg_iterations": its, "limited": limited}
    return ys, c, b, stats, acc, status, macc
