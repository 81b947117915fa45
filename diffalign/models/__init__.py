"""Model abstraction: the Denoiser, its Prediction, adapters, wrappers, LoRA and RLG (loading by name: :mod:`diffalign.zoo`)."""

from .conditioning import Condition, cat_conditions, index_condition
from .denoiser import Denoiser, FunctionDenoiser
from .prediction import PREDICTION_KINDS, Prediction, combine
from .wrappers import BudgetExceeded, CFGDenoiser, DenoiserWrapper, NFECounter
from .rlg import RLGDenoiser

__all__ = [
    "BudgetExceeded",
    "CFGDenoiser",
    "Condition",
    "Denoiser",
    "DenoiserWrapper",
    "FunctionDenoiser",
    "NFECounter",
    "PREDICTION_KINDS",
    "Prediction",
    "RLGDenoiser",
    "cat_conditions",
    "combine",
    "index_condition",
]
