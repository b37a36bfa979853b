"""Statistics and reports for MUSHRA listening tests (ITU-R BS.1534-3).

Plain pandas / scipy / statsmodels: usable from a notebook, a training script or the
web app. Input: a ratings long table (participant, item, condition, rating) and an
optional metrics long table (condition, item, metric, value).
"""
from .analysis import Analysis, analyse
from .errors import EvaluationError
from .settings import Settings

__all__ = ["Analysis", "EvaluationError", "Settings", "analyse"]
