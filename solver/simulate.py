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
from .controller import PIDController
from .steppers import RTOL, TRBDF2, AbstractStepper, compose, linear_forcing, make_stepper, positivity_limiter  # noqa: F401

import equinox.internal as eqxi

from .results import MESSAGES, RESULTS, SolverError, code, item

SUCCESS, UNSTABLE, CG_FAILED, NONFINITE, NEGATIVE, MAX_STEPS = (
    code(RESULTS.successful), code(RESULTS.unstable), code(RESULTS.cg_failed), code(RESULTS.nonfinite),
    code(RESULTS.negative), code(RESULTS.max_steps_reached))
#: integer status -> message (the integers of `RESULTS`)
STATUS_MESSAGES = MESSAGES

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
    def result(self):
        """The status as an item of `solver.RESULTS` (e.g. `sol.result == solver.RESULTS.successful`)."""
        return item(self.status)

    @property
    def message(self) -> str:
        codes = sorted(set(np.asarray(self.status).reshape(-1).tolist()))
        return "; ".join(STATUS_MESSAGES[int(c)] for c in codes)


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


def simulate(model: Model, params: Params, *, t_end: float, dt: float | None = None, save_at=None,
             method=None, observe: Callable | None = None, c0=None, b0=None, budget: bool = False,
             positive: bool = True, checkpoint: bool = True, unroll: int = 1, factor_loop: bool | None = None,
             t0: float = 0.0, metrics=None, metrics0=None, rtol: float | None = None, atol: float | None = None,
             dt0: float | None = None, dt_max: float | None = None, max_steps: int | None = None,
             controller: PIDController | None = None, throw: bool = False, adjoint: str = "checkpoint") -> Solution:
    """Integrate the model from c0 (default zero) at time t0 (default 0) to t_end.

    Steps: either fixed, dt (s): save intervals are cut into equal steps no longer than dt; or
    error-controlled, rtol (with atol, dt0, dt_max, max_steps, or a `PIDController` as controller):
    each step's local error is estimated (TR-BDF2's embedded third-order solution when the step is
    the diffusion stepper alone, else step doubling) and the next step chosen by the controller;
    save times are hit exactly, and a run that needs more than max_steps tries ends with status
    MAX_STEPS. stats then adds "rejected" (steps tried and refused), "error_max" (the largest scaled
    local error of an accepted step, <= 1; times rtol, the largest relative local error), "h_max"
    (the longest step taken, s) and "h_next" (the step the controller proposes next: pass it as dt0
    to continue a run cut into chunks without restarting the controller; dt0 is data, no retrace).
    method: "rkl2" (default for fixed steps), "trbdf2" (default for error control), "cn", "euler", or
    a stepper instance (RKL2(s=...), CrankNicolson(tol=...), TRBDF2(tol=...)).
    observe: what to save at each save time instead of the full field c (S, *shape): an observer
    Module (t, State(c, b), params) -> pytree (`solver.observe`: RegionMeans, Probes, ...; its arrays
    are arguments of the compiled program, so new probes do not retrace it) or a function f(c, t).
    budget: also return cumulative amounts per factor: secreted, decayed, taken_up, cleared
    (and to_boundary with Robin coefficients).
    c0: initial state (S, *shape); default zero. b0: initial bound factor with binding.
    With binding, observe is called as f(c, t, b) and the default saves (c, b); Solution.bound
    is the bound field at t_end and the budget adds degraded_bound.
    The stepper is composed as Positive(PerFactor(scheme)) from wrappers (`solver.Positive`,
    `solver.PerFactor`), given in method= or switched by two flags:
    positive: wrap the scheme in `Positive`, the conservative positivity limiter after each
    diffusion step (see `positivity_limiter`); the amount it moved is stats["limited"]. Pass False
    for signed data (verification modes): the equations are linear and accept them.
    factor_loop: wrap it in `PerFactor`, diffusing the factors one after another (`lax.map`)
    rather than as one batch; factors do not couple in diffusion, and one factor's stages stay in
    cache (default None: on for several factors with RKL2 and CN, off for forward Euler's single
    pass and TR-BDF2's batched CG; measured in benchmarks/README.md). A flag False against a
    wrapper given in method= is an error.
    checkpoint: reverse-mode memory by checkpointing (each fixed step; the error-controlled loop
    as equinox's checkpointed while loop). With error control, pass checkpoint=False for forward
    mode (jax.jvp / jacfwd), which a checkpointed while loop does not support.

    metrics: an accumulator updated after every step, independent of save_at (running
    integrals, maxima, time above a threshold): an object with `init(c, b, t) -> acc` and
    `update(acc, c0, b0, c1, b1, t0, t1) -> acc` on fields (S, *shape) (b is None without
    binding), e.g. `solver.Exposure`; its final value is `Solution.metrics`. metrics0: an
    accumulator value to continue from (a run cut into chunks); default `metrics.init(c0, b0, t0)`.

    Under jax.jit / vmap / grad the stage count of RKL2 cannot be read from traced
    parameters: pass method=RKL2(s=...) (see `solver.rkl2_stages`) or call simulate
    outside the transformation. A step that a traced parameter value makes unstable
    is reported in `Solution.status` (an integer of `solver.RESULTS`; `Solution.result` is the item).
    adjoint: how reverse mode differentiates the steps: "checkpoint" (default; JAX's own derivative of
    each step, recomputed from the stored step states; forward mode works too) or "discrete"
    (TR-BDF2: the hand-written adjoint of the step's two solves, which keeps the increments and costs
    about one forward step backwards; reverse mode only).
    throw: raise `SolverError` with the message when the run did not succeed (outside jit, vmap and
    grad; inside them, read `Solution.result`: raising from inside a compiled program is not done).
    """
    if not isinstance(model, Model):
        raise TypeError(f"simulate needs a solver.Model, got {type(model).__name__}")
    if not isinstance(params, Params):
        raise TypeError(f"simulate needs solver.Params, got {type(params).__name__}")
    model.check(params)
    params = normalise(params)
    adaptive = rtol is not None or controller is not None
    if adaptive:
        if dt is not None:
            raise ValueError("give dt (fixed steps) or rtol (error-controlled steps), not both")
        if controller is None:
            extra = {k: v for k, v in (("atol", atol), ("dt_max", dt_max),
                                       ("max_steps", max_steps)) if v is not None}
            controller = PIDController(rtol=float(rtol), **{k: (int(v) if k == "max_steps" else float(v))
                                                            for k, v in extra.items()})
        stepper = make_stepper("trbdf2" if method is None else method)
    else:
        if dt is None:
            raise ValueError("simulate needs dt (fixed steps, s) or rtol (error-controlled steps)")
        stepper = make_stepper("rkl2" if method is None else method)
    save, starts, h, n = _plan(float(t_end), float(dt) if not adaptive else float(t_end), save_at, float(t0))
    h_cap = None
    if adaptive:
        h_cap = min(float(controller.dt_max), float(np.max(np.where(n > 0, h, 0.0))))
    if not _is_traced(params):
        rho = float(jnp.max(spectral_bound(model, params)))
        stepper = stepper.plan(rho, h_cap if adaptive else float(h.max()))
    elif stepper.stages == 0:
        raise ValueError("RKL2 needs a fixed stage count when params are traced (inside jit/vmap/grad): "
                         "pass method=solver.plan(model, params, dt=dt), computed outside the transformation")
    if adjoint not in ("checkpoint", "discrete"):
        raise ValueError(f"adjoint = {adjoint!r}; allowed: 'checkpoint' or 'discrete'")
    if adjoint == "discrete":
        base = stepper.base
        if not isinstance(base, TRBDF2):
            raise ValueError(f"adjoint='discrete' is written for TR-BDF2; the stepper is {type(base).__name__} "
                             "(use adjoint='checkpoint', or method='trbdf2')")
        stepper = stepper.rebuild(TRBDF2(tol=base.tol, maxiter=base.maxiter, adjoint=True))
    stepper = compose(stepper, positive=positive, per_factor=factor_loop, n_factors=model.n_factors)
    dtype = params.D.dtype
    c0 = _initial(c0, model, dtype, "c0")
    uniform = bool(np.all(n == n.max()))
    b0 = _initial(b0, model, dtype, "b0") if params.binding is not None else None
    if metrics is not None and metrics0 is None:
        metrics0 = metrics.init(c0, b0, jnp.asarray(t0, dtype))
    opts = dict(stepper=stepper, observe=observe, budget=budget, checkpoint=checkpoint, n_saves=len(save))
    if adaptive:
        ends = starts + np.where(n > 0, h * n, 0.0)
        first = float(np.min(np.where(n > 0, h * n, np.inf)))
        # dt0 given to simulate is data (a run cut into chunks starts each from the last one's proposal
        # without a new program); a controller's own dt0 is part of its structure
        dt_first = dt0 if dt0 is not None else (controller.dt0 if controller.dt0 is not None else min(60.0, first))
        out = _run_adaptive(model, params, c0, b0, metrics, metrics0, jnp.asarray(starts, dtype),
                            jnp.asarray(ends, dtype), jnp.asarray(dt_first, dtype), controller=controller,
                            h_cap=h_cap, **opts)
    else:
        out = _run(model, params, c0, b0, metrics, metrics0, jnp.asarray(starts, dtype), jnp.asarray(h, dtype),
                   jnp.asarray(n, jnp.int32), n_max=int(n.max()), uniform=uniform, unroll=unroll, **opts)
    ys, final, bound, stats, bud, status, acc_m = out
    if throw:
        final, status = _throw(final, status)
    return Solution(ts=jnp.asarray(save, dtype), ys=ys, final=final, bound=bound, stats=stats,
                    budget=bud if budget else None, status=status, metrics=acc_m)


def _throw(x, status):
    """Raise on a failed status (concrete results: outside jit, vmap and grad)."""
    if isinstance(status, jax.core.Tracer):
        raise ValueError("throw=True needs concrete results: inside jit, vmap or grad read Solution.result "
                         "(an item of solver.RESULTS) or Solution.status instead")
    codes = sorted(set(np.asarray(status).reshape(-1).tolist()))
    if codes != [SUCCESS]:
        raise SolverError("simulate: " + "; ".join(STATUS_MESSAGES[int(c)] for c in codes if c != SUCCESS))
    return x, status


def _core(model, params, c0, b0, metrics, *, stepper, budget, embedded):
    """The pieces of one step: (acc0, step) with step(carry, t0, h) -> (carry, error field or None).

    carry = (c, b, budget acc, CG iterations, CG converged, no negative total, amount limited,
    metrics acc). The step is R(h/2) D_f(h) R(h/2) with the nonlinear reactions R (saturable
    uptake, binding with the linear losses; kinetics.py) around the diffusion stepper D_f, whose
    operator holds every other linear loss; without reactions it is D_f(h) alone. `embedded`: also
    return the stepper's embedded error estimate (TR-BDF2 without reactions)."""
    space = model.space
    g = model.operator(params)
    sinks = model.operator_sinks(params)
    in_operator = model.losses_in_operator(params)
    rates = model.loss_rates(params)
    kappa = sum(rates.values())
    shares = {k: r / jnp.where(kappa > 0, kappa, 1.0) for k, r in rates.items()}
    zero = jnp.zeros(c0.shape[0], c0.dtype)
    bnd = params.binding
    uptakes = params.reactions
    reactions = bool(uptakes) or bnd is not None
    if reactions:
        col = lambda x: x.reshape((-1,) + (1,) * len(space.shape))  # noqa: E731
        kin = dict(kappa=0.0 if in_operator else kappa,
                   uptake=tuple((lambda c, r=r: r.coefficient(space, c), lambda c, r=r: r.slope(space, c))
                                for r in uptakes),
                   kon=0.0 if bnd is None else col(bnd.kon),
                   koff=0.0 if bnd is None else col(bnd.koff), B=0.0 if bnd is None else space.per_node(bnd.capacity),
                   kdeg=0.0 if bnd is None else col(bnd.kdeg))

    # With ECM binding the sources enter the reaction sub-steps, where the stiff free/bound exchange
    # takes them up (exactly while the kinetics are linear; kinetics.py); otherwise the diffusion
    # stepper, whose fixed point is then the exact discrete steady state next to a point source.
    source_in_reactions = bnd is not None

    def half_react(c, b, h, acc, f=None):
        """Reactions over h by kinetics.step (exponential Rosenbrock-Euler, exact for linear kinetics),
        with the source rate f when given; each mechanism's loss to its budget entry."""
        new, nb, losses = kinetics_step(c, jnp.zeros_like(c) if b is None else b, h, 0.0 if f is None else f, **kin)
        if budget:
            if not in_operator:
                acc = dict(acc, **{k: acc[k] + space.total(losses["linear"] * shares[k]) for k in shares})
            for r, loss in zip(uptakes, losses["uptake"]):
                acc[r.budget] = acc[r.budget] + space.total(loss)
            if b is not None:
                acc["degraded_bound"] = acc["degraded_bound"] + space.total(losses["degraded"])
        return new, (None if b is None else nb), acc

    def half_rates(t0, h):
        """Average source rates (2, S) of each source over the two halves of [t0, t0 + h]: every profile
        is evaluated once, at the three times together (one batched computation, not four)."""
        times = jnp.stack([t0, t0 + 0.5 * h, t0 + h])
        half = 0.5 * h
        inv = 1.0 / jnp.where(half > 0, half, 1.0)
        out = []
        for prof in params.sources:
            cum = jax.vmap(prof.cumulative)(times)                     # (3, S)
            out.append((cum[1:] - cum[:-1]) * inv)
        return out

    def fields(rates_k):
        """Forcing fields (K, S, *shape) from per-source rates (K, S): one scatter per source."""
        K = rates_k[0].shape[0]
        f = jnp.zeros((K,) + c0.shape, c0.dtype)
        for src, r in zip(model.sources, rates_k):
            f = jax.vmap(src.add)(f, r)
        return f

    def diffuse(c, h, f, st):
        return stepper.step(space, g, c, h, f, st, error=embedded)

    def step(carry, t0, h):
        c, b, acc, its, cg_ok, ok, limited, macc, st = carry
        c_start, b_start = c, b
        f = f1 = f2 = None
        if model.sources:
            halves = half_rates(t0, h)
            if source_in_reactions:
                f1, f2 = fields(halves)
                f = 0.5 * (f1 + f2)
            elif getattr(stepper, "linear_sources", False):
                f = linear_forcing(*fields(halves))
            else:
                f = fields([0.5 * (r[0] + r[1])[None] for r in halves])[0]
        f_mean = f[0] if isinstance(f, tuple) else f
        if reactions:
            c, b, acc = half_react(c, b, 0.5 * h, acc, f1)
        before = c
        c, k, converged, err, st = diffuse(c, h, None if source_in_reactions else f, st)
        if budget and sinks:
            # diffusion conserves: what the step lost went to the operator's sinks, shared out in
            # proportion to each one's trapezoidal loss h/2 sum m r_k (c_start + c_end)
            inflow = zero if (f is None or source_in_reactions) else h * space.total(f_mean)
            lost = space.total(before) + inflow - space.total(c)
            w = {k_: space.total(r * (before + c)) for k_, r in sinks.items()}
            wsum = sum(w.values())
            n_s = float(len(w))
            acc = dict(acc, **{k_: acc[k_] + lost * jnp.where(wsum != 0, w[k_] / jnp.where(wsum != 0, wsum, 1.0),
                                                                1.0 / n_s) for k_ in w})
        pos = stepper.positivity(st)   # the Positive wrapper's limiter, applied inside the step
        if pos is not None:
            moved, failed = pos
            limited = limited + moved
            ok = ok & ~jnp.any(failed)
        if reactions:
            c, b, acc = half_react(c, b, 0.5 * h, acc, f2)
        if budget and f is not None:
            acc = dict(acc, secreted=acc["secreted"] + h * space.total(f_mean))
        if metrics is not None:
            macc = metrics.update(macc, c_start, b_start, c, b, t0, t0 + h)
        return (c, b, acc, its + k, cg_ok & converged, ok, limited, macc, st), err

    names = set(rates) | set(sinks) | {r.budget for r in uptakes}
    acc0 = {"secreted": zero, **{k: zero for k in sorted(names)},
            **({"degraded_bound": zero} if bnd is not None else {})}
    return acc0, step, g


def _status(space, g, c, b, cg_ok, pos_ok, unstable, out_of_steps=None):
    nonfinite = ~jnp.all(jnp.isfinite(c)) | (b is not None and ~jnp.all(jnp.isfinite(b)))
    status = jnp.where(nonfinite, NONFINITE, jnp.where(unstable, UNSTABLE, jnp.where(
        ~cg_ok, CG_FAILED, jnp.where(pos_ok, SUCCESS, NEGATIVE))))
    if out_of_steps is not None:
        status = jnp.where(out_of_steps & (status == SUCCESS), MAX_STEPS, status)
    return status


def _observe(observe, c, b, t, params=None):
    from .observe import AbstractObserver, State

    if isinstance(observe, AbstractObserver):
        return observe(t, State(c, b), params)
    if b is None:
        return c if observe is None else observe(c, t)
    return (c, b) if observe is None else observe(c, t, b)


@eqx.filter_jit
def _run(model, params, c0, b0, metrics, metrics0, starts, hs, ns, *, stepper: AbstractStepper, n_max, uniform,
         observe, budget, checkpoint, n_saves, unroll):
    TRACE_COUNT[type(stepper.base).__name__] += 1
    acc0, step, g = _core(model, params, c0, b0, metrics, stepper=stepper, budget=budget, embedded=False)
    step_only = lambda carry, t0, h: step(carry, t0, h)[0]  # noqa: E731
    if checkpoint and not getattr(stepper.base, "adjoint", False):
        step_only = jax.checkpoint(step_only)

    def interval(carry, x):
        t_start, h, n = x

        def body(carry, i):
            t0 = t_start + i.astype(h.dtype) * h
            if uniform:
                return step_only(carry, t0, h), None
            return jax.lax.cond(i < n, lambda c: step_only(c, t0, h), lambda c: c, carry), None

        carry, _ = jax.lax.scan(body, carry, jnp.arange(n_max), unroll=unroll)
        return carry, _observe(observe, carry[0], carry[1], t_start + n.astype(h.dtype) * h, params)

    zero = jnp.zeros(c0.shape[0], c0.dtype)
    init = (c0, b0, acc0, jnp.zeros((), jnp.int32), jnp.array(True), jnp.array(True), zero, metrics0,
            stepper.init(c0))
    (c, b, acc, its, cg_ok, pos_ok, limited, macc, _), ys = jax.lax.scan(interval, init, (starts, hs, ns))
    ys = jax.tree.map(lambda y: y[:n_saves], ys)
    rho = model.space.rate_bound(g)
    unstable = jnp.any(jnp.max(hs) > stepper.limit(rho) * (1 + RTOL))
    status = _status(model.space, g, c, b, cg_ok, pos_ok, unstable)
    steps = jnp.sum(ns)
    stats = {"steps": steps, "stages": steps * stepper.stages, "cg_iterations": its, "limited": limited}
    return ys, c, b, stats, acc, status, macc


@eqx.filter_jit
def _run_adaptive(model, params, c0, b0, metrics, metrics0, starts, ends, dt_first, *, stepper: AbstractStepper,
                  controller: PIDController, h_cap, observe, budget, checkpoint, n_saves):
    TRACE_COUNT[type(stepper.base).__name__ + "/adaptive"] += 1
    space = model.space
    reactions = bool(params.reactions) or params.binding is not None
    embedded = hasattr(stepper.base, "diffuse_with_error") and not reactions
    acc0, step, g = _core(model, params, c0, b0, metrics, stepper=stepper, budget=budget, embedded=embedded)
    dtype = c0.dtype
    rho = space.rate_bound(g)
    h_limit = jnp.minimum(jnp.min(stepper.limit(rho)), h_cap).astype(dtype)
    # order of the local error estimate: h^3 for TR-BDF2's embedded pair, h^(p+1) for step doubling
    q = 3 if embedded else stepper.order + 1
    # memory of the problem: errors made longer ago than tau have decayed. A local error e is charged
    # e * max(1, tau / h) (error per unit step over tau): then the error at a save time, the sum of
    # the earlier local errors, each decayed since, is about rtol whatever the number of steps
    # (controlling e alone gives a global error ~ rtol^(2/3), growing against rtol as rtol falls).
    # tau = (1 - exp(-r T)) / r over the run's length T with r the smallest linear loss rate (a lower
    # bound of the operator's smallest eigenvalue, so errors are not assumed to decay faster than
    # they do); with binding, whose bound pool has a memory of its own, tau = T.
    span = ends[-1] - starts[0]
    if model.losses_in_operator(params):
        kappa = sum(model.loss_rates(params).values())
        r_min = jnp.min(jnp.broadcast_to(kappa, c0.shape))
        x = r_min * span   # tau = int_0^span exp(-r_min s) ds, the weight a constant error rate accumulates
        tau = jnp.where(x > 1e-6, -jnp.expm1(-x) / jnp.where(x > 1e-6, r_min, 1.0), span)
    else:
        tau = span
    tau = jax.lax.stop_gradient(tau)
    # ... but an estimate has a round-off floor of about eps / rtol that does not shrink with h; charged
    # tau / h times it would drive h to zero (float32): the charge is capped where that floor stays
    # below 1 % of the tolerance
    charge_cap = max(1.0, 0.01 * controller.rtol / float(jnp.finfo(dtype).eps))

    def attempt(carry, t, h):
        if embedded:
            new, err = step(carry, t, h)
            err_parts = (err,)
        else:
            full, _ = step(carry, t, h)
            half, _ = step(carry, t, 0.5 * h)
            new, _ = step(half, t + 0.5 * h, 0.5 * h)
            scale = 1.0 / (2.0 ** stepper.order - 1.0)
            err_parts = tuple((x - y) * scale for x, y in zip((new[0],) + (() if new[1] is None else (new[1],)),
                                                                (full[0],) + (() if full[1] is None else (full[1],))))
        old_y = (carry[0],) + (() if carry[1] is None else (carry[1],))
        new_y = (new[0],) + (() if new[1] is None else (new[1],))
        y = tuple(jnp.maximum(jnp.abs(a), jnp.abs(b_)) for a, b_ in zip(old_y, new_y))
        e = controller.error_norm(space, err_parts, y)
        finite = jnp.all(jnp.isfinite(new[0])) & (new[1] is None or jnp.all(jnp.isfinite(new[1])))
        # (a CG failure is not a reason to reject here: under jacfwd the tangent solves' flags are
        # batched and would batch the step sequence; it is reported in the status)
        # a step whose total went negative (TR-BDF2's stability function is negative for sink-dominated
        # modes at -z between about 2.4 and 10^2, CN's for all -z > 2) is refused: a shorter one keeps sign
        e = jnp.where(finite & new[5], e, jnp.inf)
        return new, e

    def interval(state, x):
        t_start, t_stop = x

        def cond(s):
            carry, t, h, prev_e, n_ok, n_rej, e_max, h_max = s
            return (t < t_stop) & (n_ok + n_rej < controller.max_steps)

        def body(s):
            carry, t, h_prop, prev_e, n_ok, n_rej, e_max, h_max = s
            h_prop = jnp.minimum(h_prop, h_limit)
            remaining = t_stop - t
            last = h_prop >= remaining * (1 - 1e-9)
            h = jnp.where(last, remaining, h_prop)
            new, e = attempt(carry, t, h)
            # the step sequence is a choice, not a function to differentiate: derivatives are those of
            # the discrete solution on the steps taken (the discrete adjoint)
            e = jax.lax.stop_gradient(e * jnp.clip(tau / h, 1.0, charge_cap))
            accept = e <= 1.0
            factor = controller.factor(e, prev_e, jnp.where(tau > h, q - 1, q))
            h_next = jnp.minimum(h * factor, h_limit)
            h_next = jnp.where(accept & last, jnp.maximum(h_next, jnp.minimum(h_prop * factor, h_limit)), h_next)
            carry = jax.tree.map(lambda a, b_: jnp.where(accept, a, b_), new, carry)
            t = jnp.where(accept, jnp.where(last, t_stop, t + h), t)
            return (carry, t, h_next, jnp.where(accept, jnp.maximum(e, 1e-4), prev_e),
                    n_ok + accept.astype(jnp.int32), n_rej + (~accept).astype(jnp.int32),
                    jnp.where(accept, jnp.maximum(e_max, e), e_max), jnp.where(accept, jnp.maximum(h_max, h), h_max))

        s = (state[0], t_start) + tuple(state[1:])
        if checkpoint:
            s = eqxi.while_loop(cond, body, s, max_steps=controller.max_steps, kind="checkpointed")
        else:
            s = jax.lax.while_loop(cond, body, s)
        carry, t = s[0], s[1]
        return (carry,) + tuple(s[2:]), (_observe(observe, carry[0], carry[1], t, params), t)

    zero = jnp.zeros(c0.shape[0], c0.dtype)
    init = (c0, b0, acc0, jnp.zeros((), jnp.int32), jnp.array(True), jnp.array(True), zero, metrics0,
            stepper.init(c0))
    i0 = jnp.zeros((), jnp.int32)
    state = (init, jnp.minimum(dt_first, h_limit), jnp.asarray(1.0, dtype), i0, i0,
             jnp.zeros((), dtype), jnp.zeros((), dtype))
    state, (ys, t_reached) = jax.lax.scan(interval, state, (starts, ends))
    (c, b, acc, its, cg_ok, pos_ok, limited, macc, _), h_next, _, n_ok, n_rej, e_max, h_max = state
    ys = jax.tree.map(lambda y: y[:n_saves], ys)
    out_of_steps = jnp.any(t_reached < ends)
    status = _status(space, g, c, b, cg_ok, pos_ok, jnp.array(False), out_of_steps)
    attempts = n_ok + n_rej
    stats = {"steps": n_ok, "rejected": n_rej, "stages": attempts * stepper.stages * (1 if embedded else 3),
             "cg_iterations": its, "limited": limited, "error_max": e_max, "h_max": h_max, "h_next": h_next}
    return ys, c, b, stats, acc, status, macc
