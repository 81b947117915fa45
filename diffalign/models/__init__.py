"""Model abstraction: the Denoiser, its Prediction, adapters, wrappers and the embedded zoo."""

from .conditioning import Condition, cat_conditions, index_condition
from .denoiser import Denoiser, FunctionDenoiser
from .prediction import PREDICTION_KINDS, Prediction, combine
from .wrappers import BudgetExceeded, CFGDenoiser, DenoiserWrapper, NFECounter
from .reward_guidance import RewardGuidance
from .rlg import RLGDenoiser
from .zoo import load_model, load_pipeline

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
    "RewardGuidance",
    "cat_conditions",
    "combine",
    "index_condition",
    "load_model",
    "load_pipeline",
]
