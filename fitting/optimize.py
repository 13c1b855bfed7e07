"""Optimisers written as JAX loops, so that multi-start runs batch with `vmap` (and shard).

`levenberg_marquardt(residual, z0, lo, hi)`: least squares 0.5 |r(z)|^2 with the Jacobian by
forward mode (`jax.jacfwd`: one pass with P tangents, P = number of free parameters), Nielsen's
damping update, box bounds by projection. A step whose loss is not finite or not lower is
rejected (the damping grows), never taken.

`optax_minimize(loss, z0, lo, hi, name)`: adam or L-BFGS from optax on a scalar loss with
reverse-mode gradients, for many free parameters.

Status codes: see STATUS.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

RUNNING, GTOL, XTOL, FTOL, MAXITER, NONFINITE = 0, 1, 2, 3, 4, 5
STATUS = {RUNNING: "running", GTOL: "converged (gradient below gtol)", XTOL: "converged (step below xtol)",
          FTOL: "converged (relative loss change below ftol)", MAXITER: "stopped: iteration budget reached",
          NONFINITE: "failed: the loss is not finite at the start"}


def levenberg_marquardt(residual, z0, lo, hi, *, max_iter: int = 50, gtol: float = 1e-8, xtol: float = 1e-8,
                        ftol: float = 1e-10, lam0: float = 1e-3, progress=None):
    """Returns dict(z, loss, status, iterations, n_residual, n_jacobian, history (max_iter + 1,), J, r).
    progress: f(iteration, loss, lam) called from inside the loop (jax.debug.callback) per iteration."""

    def value_and_jac(z):
        J, r = jax.jacfwd(lambda x: (lambda r: (r, r))(residual(x)), has_aux=True)(z)
        return r, J

    z0 = jnp.clip(z0, lo, hi)
    r0, J0 = value_and_jac(z0)
    loss0 = 0.5 * jnp.sum(r0 * r0)
    hist = jnp.full(max_iter + 1, jnp.nan, r0.dtype).at[0].set(loss0)
    status0 = jnp.where(jnp.isfinite(loss0) & jnp.all(jnp.isfinite(J0)), RUNNING, NONFINITE)
    state = dict(z=z0, r=r0, J=J0, loss=loss0, lam=jnp.asarray(lam0, r0.dtype), nu=jnp.asarray(2.0, r0.dtype),
                 it=jnp.asarray(0), status=status0, hist=hist, nj=jnp.asarray(1))

    def cond(s):
        return s["status"] == RUNNING

    def body(s):
        z, r, J, loss, lam, nu = s["z"], s["r"], s["J"], s["loss"], s["lam"], s["nu"]
        g = J.T @ r
        A = J.T @ J
        diag = jnp.maximum(jnp.diag(A), 1e-12 * jnp.max(jnp.diag(A)) + 1e-300)
        step = jnp.linalg.solve(A + lam * jnp.diag(diag), -g)
        z_new = jnp.clip(z + step, lo, hi)
        step = z_new - z
        r_new, J_new = value_and_jac(z_new)
        loss_new = 0.5 * jnp.sum(r_new * r_new)
        predicted = -(g @ step + 0.5 * step @ A @ step)
        rho = (loss - loss_new) / jnp.where(predicted > 0, predicted, 1e-300)
        ok = jnp.isfinite(loss_new) & jnp.all(jnp.isfinite(J_new)) & (loss_new < loss)
        lam_ok = lam * jnp.maximum(1.0 / 3.0, 1.0 - (2.0 * rho - 1.0) ** 3)
        it = s["it"] + 1
        out = dict(z=jnp.where(ok, z_new, z), r=jnp.where(ok, r_new, r), J=jnp.where(ok, J_new, J),
                   loss=jnp.where(ok, loss_new, loss), lam=jnp.where(ok, lam_ok, lam * nu),
                   nu=jnp.where(ok, 2.0, 2.0 * nu), it=it, nj=s["nj"] + 1)
        small_step = jnp.linalg.norm(step) <= xtol * (jnp.linalg.norm(z) + xtol)
        small_change = ok & (loss - loss_new <= ftol * jnp.maximum(loss, 1e-300))
        g_new = jnp.where(ok, out["J"].T @ out["r"], g)
        grad_small = jnp.max(jnp.abs(g_new)) <= gtol * jnp.maximum(1.0, out["loss"])
        status = jnp.where(grad_small, GTOL, jnp.where(ok & small_step, XTOL, jnp.where(small_change, FTOL, RUNNING)))
        status = jnp.where((status == RUNNING) & (it >= max_iter), MAXITER, status)
        status = jnp.where((status == RUNNING) & (out["lam"] > 1e16), XTOL, status)  # no descent left at this scale
        out["status"] = status
        out["hist"] = s["hist"].at[it].set(out["loss"])
        if progress is not None:
            jax.debug.callback(progress, it, out["loss"], out["lam"], ok)
        return out

    s = jax.lax.while_loop(cond, body, state)
    return dict(z=s["z"], loss=s["loss"], status=s["status"], iterations=s["it"], n_residual=s["nj"],
                n_jacobian=s["nj"], history=s["hist"], J=s["J"], r=s["r"])


def optax_minimize(loss_fn, z0, lo, hi, *, name: str = "lbfgs", max_iter: int = 200, gtol: float = 1e-8,
                   learning_rate: float = 0.05):
    """Minimise a scalar loss with optax (adam or lbfgs) in a while loop; steps are projected on [lo, hi]
    and a step to a non-finite loss is rejected. Returns dict(z, loss, status, iterations, history)."""
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
        return dict(z=jnp.where(ok, z_new, s["z"]), opt=opt_state, loss=jnp.where(ok, loss_new, s["loss"]), it=it,
                    status=status, hist=s["hist"].at[it].set(jnp.where(ok, loss_new, s["loss"])),
                    best=jnp.where(better, z_new, s["best"]), best_loss=jnp.where(better, loss_new, s["best_loss"]))

    s = jax.lax.while_loop(lambda s: s["status"] == RUNNING, body, s0)
    return dict(z=s["best"], loss=s["best_loss"], status=s["status"], iterations=s["it"], history=s["hist"])
