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

import math
from typing import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .model import Model
from .params import Params
from .controller import PIDController
from .steppers import RTOL, TRBDF2, AbstractStepper, linear_forcing, make_stepper  # noqa: F401
from .wrappers import compose, positivity_limiter  # noqa: F401


from .results import MESSAGES, RESULTS, SolverError, code, item

from .loops import CG_FAILED, MAX_STEPS, NEGATIVE, NONFINITE, SUCCESS, TRACE_COUNT, UNSTABLE, _run, _run_adaptive  # noqa: F401
#: integer status -> message (the integers of `RESULTS`)
STATUS_MESSAGES = MESSAGES



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
    about one forward step backwards; reverse mode only). Its backward solves stop at
    max(tol, 1e-6) unless `TRBDF2(adjoint_tol=...)` says otherwise (TRBDF2.ADJOINT_TOL). A gradient
    carries no status: where a backward solve (the discrete adjoint's, or the transposed CG solve of
    CN / TR-BDF2 under "checkpoint") does not converge within maxiter, its cotangents are NaN (forward
    mode's tangent solves are not flagged; see steppers._linear_solve).
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
        stepper = stepper.rebuild(TRBDF2(tol=base.tol, maxiter=base.maxiter, adjoint=True, adjoint_tol=base.adjoint_tol))
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
