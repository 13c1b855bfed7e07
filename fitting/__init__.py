"""Calibration of rates to measured data: observations, observation operators, free parameters,
Levenberg-Marquardt and optax optimisers (multi-start with vmap), uncertainty.

    obs = fitting.read_csv("data.csv", scenario)
    result = fitting.fit(built, obs, ["VEGF.secretion", "VEGF.uptake.border"])
"""

from . import report, sweep as ensembles
from .data import DataError, Observations, from_rows, read_csv
from .fit import FitResult, Problem, fit, profile_likelihood
from .model import Predictor
from .parameters import FreeParameter, available, resolve
from .sweep import sweep

__all__ = ["report", "ensembles", "DataError", "FitResult", "FreeParameter", "Observations", "Predictor", "Problem", "available", "fit",
           "from_rows", "profile_likelihood", "read_csv", "resolve", "sweep"]
