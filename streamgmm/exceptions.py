"""Exceptions and warnings shared by every layer."""


class NotFittedError(ValueError, AttributeError):
    """Raised when a model is used before ``fit``."""


class ConvergenceWarning(UserWarning):
    """EM stopped at ``max_iter`` before the lower bound changed by less than ``tol``."""
