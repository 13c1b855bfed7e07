"""One enumeration of outcomes for `simulate`, `steady_state` and the optimisers of `fitting`
(an `equinox.Enumeration`: its items survive jit and vmap, and `throw=` raises with the message)."""

from __future__ import annotations

import equinox as eqx
import jax.numpy as jnp
import numpy as np


class RESULTS(eqx.Enumeration):
    successful = "success"
    unstable = "time step past the explicit stepper's stability limit for these parameters"
    cg_failed = "conjugate gradients did not converge within maxiter"
    nonfinite = "non-finite values in the solution"
    negative = ("a step removed more of a factor than the field held (negative total; the positivity "
                "limiter cannot repair it): take a smaller dt, or method='rkl2' against strong sinks")
    max_steps_reached = ("the error-controlled steps did not reach t_end within max_steps: raise max_steps "
                         "or rtol")
    running = "running"
    converged_gtol = "converged (gradient below gtol)"
    converged_xtol = "converged (step below xtol, or no step lowers the loss)"
    converged_ftol = "converged (relative loss change below ftol)"
    max_iterations = "stopped: iteration budget reached"
    nonfinite_loss = "stopped: non-finite loss or Jacobian"


def code(item) -> int:
    """The integer of an item (what `Solution.status` and the optimisers' `status` hold)."""
    return int(np.asarray(item._value))


#: integer code -> message, for code that holds statuses as integers (run.json, sweep tables)
MESSAGES = {code(getattr(RESULTS, name)): RESULTS[getattr(RESULTS, name)]
            for name in RESULTS._name_to_item}


def item(status) -> eqx.Enumeration:
    """The RESULTS item of an integer status array (any shape: vmapped runs)."""
    from equinox._enum import EnumerationItem

    return EnumerationItem(jnp.asarray(status, jnp.int32), RESULTS)


class SolverError(RuntimeError):
    """A run that did not succeed, raised with throw=True (outside jit; inside, equinox's runtime error)."""
