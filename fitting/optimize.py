"""Optimisers written as JAX loops, so that multi-start runs batch with `vmap` (and shard).

`levenberg_marquardt(residual, z0, lo, hi)`: least squares 0.5 |r(z)|^2 with the Jacobian by
forward mode (`jax.jacfwd`: one pass with P tangents, P = number of free parameters), Nielsen's
damping update, box bounds by projection. A step whose loss is not finite or not lower is
rejected (the damping grows), never taken. It stops on a flat loss: when an accepted step lowers
the loss by less than `ftol` (relative, default 1e-10) the status is FTOL ("converged (relative
loss change below ftol)"), a status value like the others, never an exception.

`optax_minimize(loss, z0, lo, hi, name)`: adam or L-BFGS from optax on a scalar loss with
reverse-mode gradients, for many free parameters.

Status codes: see STATUS.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from paracrine.solver.results import MESSAGES, RESULTS, code

# the optimisers' outcomes are items of solver.RESULTS, the one enumeration of the project
RUNNING, GTOL, XTOL, FTOL, MAXITER, NONFINITE = (code(RESULTS.running), code(RESULTS.converged_gtol),
                                                 code(RESULTS.converged_xtol), code(RESULTS.converged_ftol),
                                                 code(RESULTS.max_iterations), code(RESULTS.nonfinite_loss))
STATUS = {k: MESSAGES[k] for k in (RUNNING, GTOL, XTOL, FTOL, MAXITER, NONFINITE)}
CONVERGED = (GTOL, XTOL, FTOL)


def levenberg_marquardt(residual, z0, lo, hi, *, max_iter: int = 50, gtol: float = 1e-8, xtol: float = 1e-8,
                        ftol: float = 1e-10, lam0: float = 1.0, max_trials: int = 13, refresh: int = 1,
                        progress=None):
    """Returns dict(z, loss, status, iterations, n_residual, n_jacobian, history (max_iter + 1,), J, r).

    Each iteration tries damped Gauss-Newton steps with residual evaluations only (one model solve
    each) until the loss decreases, then evaluates the Jacobian there exactly (one forward-mode pass
    carrying P tangents). refresh > 1: between exact Jacobians, `refresh - 1` accepted steps use
    Broyden's rank-one update instead (an exact one is still taken when the updated one finds no
    descent and before convergence is accepted); measured no faster on benchmarks/fit.py. progress: f(iteration, loss, damping, accepted) per iteration
    (jax.debug.callback)."""

    def value_and_jac(z):
        J, r = jax.jacfwd(lambda x: (lambda r: (r, r))(residual(x)), has_aux=True)(z)
        return r, J

    z0 = jnp.clip(z0, lo, hi)
    r0, J0 = value_and_jac(z0)
    loss0 = 0.5 * jnp.sum(r0 * r0)
    hist = jnp.full(max_iter + 1, jnp.nan, r0.dtype).at[0].set(loss0)
    status0 = jnp.where(jnp.isfinite(loss0) & jnp.all(jnp.isfinite(J0)), RUNNING, NONFINITE)
    one = jnp.asarray(1)
    state = dict(z=z0, r=r0, J=J0, loss=loss0, lam=jnp.asarray(lam0, r0.dtype), nu=jnp.asarray(2.0, r0.dtype),
                 it=jnp.asarray(0), status=status0, hist=hist, nr=one * 0, nj=one, stale=jnp.asarray(0))

    def body(s):
        z, r, J, loss = s["z"], s["r"], s["J"], s["loss"]
        g = J.T @ r
        A = J.T @ J
        diag = jnp.maximum(jnp.diag(A), 1e-12 * jnp.max(jnp.diag(A)) + 1e-300)

        def trial(t):
            lam = t["lam"]
            # the first trial of an iteration is the undamped Gauss-Newton step: near a solution it gives
            # quadratic convergence even along directions the data barely determine (where any damping
            # proportional to diag(A) dominates)
            step = jnp.linalg.solve(A + jnp.where(t["k"] == 0, 0.0, lam) * jnp.diag(diag), -g)
            z_new = jnp.clip(z + step, lo, hi)
            step = z_new - z
            r_new = residual(z_new)
            loss_new = 0.5 * jnp.sum(r_new * r_new)
            ok = jnp.isfinite(loss_new) & (loss_new < loss)
            predicted = -(g @ step + 0.5 * step @ A @ step)
            rho = (loss - loss_new) / jnp.where(predicted > 0, predicted, 1e-300)
            first = t["k"] == 0
            return dict(lam=jnp.where(ok, lam * jnp.maximum(1.0 / 9.0, 1.0 - (2.0 * rho - 1.0) ** 3),
                                      jnp.where(first, lam, lam * t["nu"])),
                        nu=jnp.where(ok, 2.0, jnp.where(first, t["nu"], 2.0 * t["nu"])), ok=ok, k=t["k"] + 1, z=z_new, r=r_new, loss=loss_new,
                        step=step)

        t0 = dict(lam=s["lam"], nu=s["nu"], ok=jnp.asarray(False), k=jnp.asarray(0), z=z, r=r, loss=loss,
                  step=jnp.zeros_like(z))
        t = jax.lax.while_loop(lambda t: ~t["ok"] & (t["k"] < max_trials), trial, t0)
        ok = t["ok"]
        # Broyden's rank-one update of J along the accepted step; the exact Jacobian (a forward-mode
        # pass) only every `refresh` accepted steps, when no step lowers the loss with an updated J,
        # and before convergence is declared
        dz = t["z"] - z
        J_b = J + jnp.outer(t["r"] - r - J @ dz, dz) / jnp.maximum(dz @ dz, 1e-300)
        stale = jnp.where(ok, s["stale"] + 1, s["stale"])
        r_now = jnp.where(ok, t["r"], r)
        J_now = jnp.where(ok, J_b, J)
        loss_now = jnp.where(ok, t["loss"], loss)
        small_step = jnp.linalg.norm(t["step"]) <= xtol * (jnp.linalg.norm(z) + xtol)
        small_change = ok & (loss - t["loss"] <= ftol * jnp.maximum(loss, 1e-300))
        grad_small = jnp.max(jnp.abs(J_now.T @ r_now)) <= gtol * jnp.maximum(1.0, loss_now)
        signal = grad_small | small_step | small_change | ~ok
        fresh = (stale > 0) & (signal | (stale >= refresh))
        z_now = jnp.where(ok, t["z"], z)
        J_new = jax.lax.cond(fresh, lambda x: value_and_jac(x)[1], lambda x: J_now, z_now)
        finite = jnp.all(jnp.isfinite(J_new))
        J_new = jnp.where(finite, J_new, J)
        stale = jnp.where(fresh, 0, stale)
        it = s["it"] + 1
        out = dict(z=z_now, r=r_now, J=J_new, loss=loss_now, lam=t["lam"], nu=t["nu"], it=it, nr=s["nr"] + t["k"],
                   nj=s["nj"] + fresh.astype(s["nj"].dtype), stale=stale)
        grad_small = jnp.max(jnp.abs(J_new.T @ r_now)) <= gtol * jnp.maximum(1.0, loss_now)
        # the signal came with an exact Jacobian: this iteration's step was computed from one (with
        # refresh = 1 every step is, and a flat loss stops at once; a Broyden step's signal is checked
        # again after the exact Jacobian that `fresh` takes)
        done = s["stale"] == 0
        status = jnp.where(grad_small & (stale == 0), GTOL,
                           jnp.where(done & small_change, FTOL, jnp.where(done & (small_step | ~ok), XTOL, RUNNING)))
        status = jnp.where((status == RUNNING) & (it >= max_iter), MAXITER, status)
        out["status"] = status
        out["hist"] = s["hist"].at[it].set(out["loss"])
        if progress is not None:
            jax.debug.callback(progress, it, out["loss"], out["lam"], ok)
        return out

    s = jax.lax.while_loop(lambda s: s["status"] == RUNNING, body, state)
    return dict(z=s["z"], loss=s["loss"], status=s["status"], iterations=s["it"], n_residual=s["nr"],
                n_jacobian=s["nj"], history=s["hist"], J=s["J"], r=s["r"])


def optax_minimize(loss_fn, z0, lo, hi, *, name: str = "lbfgs", max_iter: int = 200, gtol: float = 1e-8,
                   learning_rate: float = 0.05, progress=None):
    """Minimise a scalar loss with optax (adam or lbfgs) in a while loop; steps are projected on [lo, hi]
    and a step to a non-finite loss is rejected. Returns dict(z, loss, status, iterations, history).
    progress: f(iteration, loss, 0, accepted) per iteration (jax.debug.callback)."""
    import optax

    if name == "adam":
        opt = optax.adam(learning_rate)
    elif name == "lbfgs":
        opt = optax.lbfgs()
    else:
        raise ValueError(f"optimizer {name!r}; allowed: 'lm', 'adam', 'lbfgs'")
    value_and_grad = optax.value_and_grad_from_state(loss_fn) if name == "lbfgs" else jax.value_and_grad(loss_fn)
    z0 = jnp.clip(z0, lo, hi)
    state0 = opt.init(z0)
    loss0 = loss_fn(z0)
    hist = jnp.full(max_iter + 1, jnp.nan, loss0.dtype).at[0].set(loss0)
    s0 = dict(z=z0, opt=state0, loss=loss0, it=jnp.asarray(0), status=jnp.where(jnp.isfinite(loss0), RUNNING, NONFINITE),
              hist=hist, best=z0, best_loss=loss0)

    def body(s):
        if name == "lbfgs":
            value, grad = value_and_grad(s["z"], state=s["opt"])
            updates, opt_state = opt.update(grad, s["opt"], s["z"], value=value, grad=grad, value_fn=loss_fn)
        else:
            value, grad = value_and_grad(s["z"])
            updates, opt_state = opt.update(grad, s["opt"], s["z"])
        z_new = jnp.clip(optax.apply_updates(s["z"], updates), lo, hi)
        loss_new = loss_fn(z_new)
        ok = jnp.isfinite(loss_new)
        it = s["it"] + 1
        better = ok & (loss_new < s["best_loss"])
        status = jnp.where(jnp.max(jnp.abs(grad)) <= gtol * jnp.maximum(1.0, value), GTOL, RUNNING)
        status = jnp.where((status == RUNNING) & (it >= max_iter), MAXITER, status)
        if progress is not None:
            jax.debug.callback(progress, it, jnp.minimum(s["best_loss"], jnp.where(ok, loss_new, jnp.inf)),
                               jnp.zeros_like(loss_new), ok)
        return dict(z=jnp.where(ok, z_new, s["z"]), opt=opt_state, loss=jnp.where(ok, loss_new, s["loss"]), it=it,
                    status=status, hist=s["hist"].at[it].set(jnp.where(ok, loss_new, s["loss"])),
                    best=jnp.where(better, z_new, s["best"]), best_loss=jnp.where(better, loss_new, s["best_loss"]))

    s = jax.lax.while_loop(lambda s: s["status"] == RUNNING, body, s0)
    return dict(z=s["best"], loss=s["best_loss"], status=s["status"], iterations=s["it"], history=s["hist"])
