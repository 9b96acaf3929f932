"""Input and parameter checks shared by the models."""
import numbers

import numpy as np

from ..exceptions import NotFittedError


def check_random_state(seed):
    """A ``np.random.RandomState`` from None, an int or an existing RandomState."""
    if seed is None or seed is np.random:
        return np.random.mtrand._rand
    if isinstance(seed, numbers.Integral):
        return np.random.RandomState(seed)
    if isinstance(seed, np.random.RandomState):
        return seed
    raise ValueError(f"{seed!r} cannot be used to seed a numpy.random.RandomState instance")


def check_array(X, dtype=(np.float64, np.float32), ensure_min_samples=1, n_features=None,
                name="X"):
    """Validate a 2-D finite numeric array; keep float32/float64, convert anything else."""
    if hasattr(X, "to_numpy"):
        X = X.to_numpy()
    Xa = np.asarray(X)
    if np.iscomplexobj(Xa):  # (casting would drop the imaginary part, with only a warning)
        raise ValueError("Complex data not supported")
    if Xa.dtype not in dtype:
        try:
            Xa = Xa.astype(dtype[0])
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{name} must contain numbers only: {exc}") from None
    if Xa.ndim != 2:
        if Xa.ndim == 1:
            raise ValueError(
                f"Expected 2D array, got 1D array instead. Reshape your data either using "
                f"array.reshape(-1, 1) if your data has a single feature or array.reshape(1, -1) "
                f"if it contains a single sample.")
        raise ValueError(f"Expected 2D array, got {Xa.ndim}D array instead.")
    if not _all_finite(Xa):
        kind = "NaN" if np.isnan(Xa).any() else "infinity"
        raise ValueError(f"Input {name} contains {kind}.")
    if Xa.shape[0] < ensure_min_samples:
        raise ValueError(f"Found array with {Xa.shape[0]} sample(s) (shape={Xa.shape}) while a "
                         f"minimum of {ensure_min_samples} is required.")
    if Xa.shape[1] < 1:
        raise ValueError(f"Found array with 0 feature(s) (shape={Xa.shape}) while a minimum of 1 "
                         f"is required.")
    if n_features is not None and Xa.shape[1] != n_features:
        raise ValueError(f"X has {Xa.shape[1]} features, but the model is expecting "
                         f"{n_features} features as input.")
    return np.ascontiguousarray(Xa)


def _all_finite(X):
    """True when X has no NaN/inf, without allocating an array of X's size.

    The sum of X is finite exactly when every element is, unless finite values overflow it;
    only then are the rows checked, in blocks of about a million values.
    """
    if X.size == 0:
        return True
    with np.errstate(over="ignore", invalid="ignore"):
        if np.isfinite(np.sum(X)):
            return True
    step = max(1, (1 << 20) // max(1, X.shape[-1]))
    return all(np.isfinite(X[i:i + step]).all() for i in range(0, X.shape[0], step))


def check_is_fitted(model, attribute="means_"):
    """Raise NotFittedError unless ``fit`` has set ``attribute``."""
    if not hasattr(model, attribute):
        raise NotFittedError(
            f"This {type(model).__name__} instance is not fitted yet. Call 'fit' with "
            f"appropriate arguments before using this estimator.")


def check_scalar(value, name, kind, low=None, high=None, low_inclusive=True,
                 high_inclusive=True):
    """Type and range check for one constructor parameter, sklearn-style messages."""
    types = {"int": numbers.Integral, "real": numbers.Real}[kind]
    if isinstance(value, bool) or not isinstance(value, types):
        raise ValueError(f"The '{name}' parameter of this model must be {kind}, got {value!r}.")
    if low is not None and (value < low or (value == low and not low_inclusive)):
        op = ">=" if low_inclusive else ">"
        raise ValueError(f"The '{name}' parameter must be {op} {low}, got {value!r}.")
    if high is not None and (value > high or (value == high and not high_inclusive)):
        op = "<=" if high_inclusive else "<"
        raise ValueError(f"The '{name}' parameter must be {op} {high}, got {value!r}.")
