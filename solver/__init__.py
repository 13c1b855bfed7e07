"""The reaction-diffusion core of paracrine (JAX).

Model (static structure) + Params (traced numbers) -> simulate(...) -> Solution.
"""

from .model import Model, field_source, point_source
from . import observe, presets
from .observe import AbstractObserver, State
from .metrics import Exposure, SmoothExposure
from .params import AbstractReaction, Binding, Hill, Params, Saturable
from .results import RESULTS, SolverError
from .space import AbstractSpace
from .profiles import AbstractProfile, Constant, Exponential, PiecewiseLinear
from .simulate import STATUS_MESSAGES, Solution, plan, simulate, spectral_bound, step_lengths
from .therapy import Bolus, CellSecretion, spread_sites
from .steady import SteadyState, steady_state
from .sources import AbstractSource, FieldSource, MovableGridSource, MovableSource, PointSource, Source
from .controller import PIDController
from .adi import DouglasADI
from .steppers import (TRBDF2, AbstractStepper, CrankNicolson, ForwardEuler, RKL2, StabilityError, rkl2_coefficients,
                       rkl2_stages)
from .wrappers import AbstractWrapper, PerFactor, Positive, compose, positivity_limiter

__all__ = [
    "presets", "RESULTS", "SolverError", "AbstractObserver", "State", "AbstractSpace",
    "Bolus", "CellSecretion", "spread_sites",
    "AbstractReaction", "Binding", "Hill", "Saturable",
    "Exposure",
    "SmoothExposure",
    "observe",
    "AbstractProfile", "AbstractSource", "AbstractStepper", "Constant", "CrankNicolson", "DouglasADI", "Exponential",
    "PIDController", "TRBDF2", "AbstractWrapper", "PerFactor", "Positive", "compose", "positivity_limiter",
    "FieldSource", "ForwardEuler", "Model", "Params", "PiecewiseLinear", "MovableGridSource", "MovableSource",
    "PointSource", "RKL2", "Source",
    "STATUS_MESSAGES", "Solution", "StabilityError", "field_source", "point_source", "rkl2_coefficients",
    "rkl2_stages", "simulate", "spectral_bound", "step_lengths", "SteadyState", "steady_state", "plan",
]
