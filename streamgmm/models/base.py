"""Estimator conventions: parameters are the constructor arguments, stored untouched."""
import inspect


class ParamsMixin:
    """``get_params``/``set_params`` derived from the constructor signature (sklearn style)."""

    #: what scikit-learn's tags call this kind of estimator
    _sklearn_estimator_type = None

    def __sklearn_tags__(self):
        """scikit-learn's estimator tags, which its meta-estimators (``GridSearchCV``,
        ``Pipeline``, ``cross_val_score``) ask for. Only scikit-learn calls this, so
        scikit-learn is imported here, never at run time otherwise."""
        from sklearn.utils import Tags, TargetTags

        return Tags(estimator_type=self._sklearn_estimator_type,
                    target_tags=TargetTags(required=False))

    @classmethod
    def _param_names(cls):
        sig = inspect.signature(cls.__init__)
        return sorted(p.name for p in sig.parameters.values()
                      if p.name != "self" and p.kind != p.VAR_KEYWORD)

    def get_params(self, deep=True):
        """Constructor parameters as a dict."""
        return {name: getattr(self, name) for name in self._param_names()}

    def set_params(self, **params):
        """Set constructor parameters; unknown names raise ValueError."""
        valid = set(self._param_names())
        for key, value in params.items():
            if key not in valid:
                raise ValueError(f"Invalid parameter {key!r} for estimator {self}. "
                                 f"Valid parameters are: {sorted(valid)!r}.")
            setattr(self, key, value)
        return self

    def __repr__(self):
        defaults = {p.name: p.default for p in
                    inspect.signature(type(self).__init__).parameters.values()}
        changed = [f"{k}={v!r}" for k, v in self.get_params().items()
                   if not _same(defaults.get(k, inspect.Parameter.empty), v)]
        return f"{type(self).__name__}({', '.join(changed)})"


def _same(a, b):
    try:
        return bool(a is b or a == b)
    except Exception:  # arrays compare element-wise
        return False
