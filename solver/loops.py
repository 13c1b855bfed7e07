"""The compiled time loops behind `simulate`: one step (`_core`: Strang splitting of the reactions
around the diffusion stepper, the budget, the metrics), its status, and the two drivers, fixed steps
(`_run`: a scan over save intervals of a scan over checkpointed steps) and error-controlled steps
(`_run_adaptive`: a bounded while loop with the PID controller).
"""

from __future__ import annotations

import collections

import equinox as eqx
import equinox.internal as eqxi
import jax
import jax.numpy as jnp

from .controller import PIDController
from .kinetics import step as kinetics_step
from .results import RESULTS, code
from .steppers import INCREMENTS, RTOL, AbstractStepper, linear_forcing

SUCCESS, UNSTABLE, CG_FAILED, NONFINITE, NEGATIVE, MAX_STEPS = (
    code(RESULTS.successful), code(RESULTS.unstable), code(RESULTS.cg_failed), code(RESULTS.nonfinite),
    code(RESULTS.negative), code(RESULTS.max_steps_reached))

#: Number of times the compiled program was traced, by stepper name (tests use it to show no retracing).
TRACE_COUNT: collections.Counter = collections.Counter()


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
    # Reverse mode: each step checkpointed (its inputs saved, the rest recomputed backwards); with the
    # discrete adjoint it keeps the two solves' increments too, so that the backward pass does not
    # repeat the forward solves. The checkpoint wraps the whole loop body, the `cond` of intervals
    # shorter than n_max included: residuals made inside a cond are its outputs, which the scan then
    # stacks per step even when they are loop-invariant (the operator's weights, (S, K, N) per step
    # with the padded layout, were saved at every step this way).
    adjoint = getattr(stepper.base, "adjoint", False)
    remat = (lambda f: jax.checkpoint(f, policy=jax.checkpoint_policies.save_only_these_names(INCREMENTS))) \
        if adjoint else (jax.checkpoint if checkpoint else (lambda f: f))

    def interval(carry, x):
        t_start, h, n = x

        @remat
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
        r_min = jnp.min(jnp.asarray(kappa))   # its values are those of its broadcast to the field (not formed)
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
