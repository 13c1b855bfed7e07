"""Calibration and optimisation over the solver, with no file formats in it: free parameters,
least-squares problems, Levenberg-Marquardt and optax optimisers (multi-start with vmap),
uncertainty (Laplace covariance, profile likelihood) and ensembles sharded over devices.

    k = fitting.parameter("decay", lambda p: p.decay, index=0, unit="1/s")
    prob = fitting.Problem(model, params0, [k], fitting.Pick(observer, t_idx, flat), times, data, sd, dt=60.0)
    result = fitting.fit(prob)

Design (`fitting.design`): controls (FreeParameters) that maximise a quantity of the simulated
course under constraints, `fitting.optimise(fitting.DesignProblem(...))`.

Scenario files, CSV data with units and the named-parameter catalogue live in
`paracrine.calibrate`, which builds these objects.
"""

from . import design
from .design import DesignProblem, DesignResult, optimise
from .fit import FitResult, fit, profile_likelihood, traces
from .optimize import levenberg_marquardt, optax_minimize
from .parameters import AbstractTransform, FreeParameter, Identity, Log, Logit, ModelControl, parameter
from .problem import AbstractObservation, Pick, Problem
from .sweep import ensemble, members, shard_rows

__all__ = ["AbstractObservation", "AbstractTransform", "DesignProblem", "DesignResult", "design", "optimise", "FitResult", "FreeParameter", "Identity", "Log", "Logit", "ModelControl", "Pick",
           "Problem", "ensemble", "fit", "levenberg_marquardt", "members", "optax_minimize", "parameter",
           "profile_likelihood", "shard_rows", "traces"]
