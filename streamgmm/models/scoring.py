"""Scoring, information criteria and sampling shared by the batch and the online mixture.

Both models expose the same fitted attributes (``weights_, means_, covariances_,
precisions_cholesky_, covariance_type``); everything computed from those alone lives here once.
"""
import numpy as np

from .. import math as gm
from .validation import check_array, check_is_fitted, check_random_state


class MixtureScoringMixin:
    """``score_samples, score, predict_proba, predict, bic, aic, sample`` from fitted params."""

    def _check_X(self, X):
        check_is_fitted(self)
        return check_array(X, n_features=self.means_.shape[1])

    def score_samples(self, X):
        """Log-density log p(x) of each row under the mixture (float64, chunked)."""
        X = self._check_X(X)
        return gm.score_samples_chunked(X, self.weights_, self.means_,
                                        self.precisions_cholesky_, self.covariance_type)

    def score(self, X, y=None):
        """Average log-likelihood per row."""
        return float(np.mean(self.score_samples(X)))

    def predict_proba(self, X):
        """Posterior probability of each component for each row (chunked)."""
        X = self._check_X(X)
        return gm.predict_proba_chunked(X, self.weights_, self.means_,
                                        self.precisions_cholesky_, self.covariance_type)

    def predict(self, X):
        """Most likely component of each row."""
        return self.predict_proba(X).argmax(axis=1)

    def _n_parameters(self):
        return gm.n_parameters(self.n_components, self.means_.shape[1], self.covariance_type)

    def bic(self, X):
        """Bayesian information criterion on X (lower is better)."""
        X = self._check_X(X)
        return float(gm.bic(self.score(X), X.shape[0], self._n_parameters()))

    def aic(self, X):
        """Akaike information criterion on X (lower is better)."""
        X = self._check_X(X)
        return float(gm.aic(self.score(X), X.shape[0], self._n_parameters()))

    def sample(self, n_samples=1):
        """Draw ``n_samples`` rows and their component labels from the fitted mixture."""
        check_is_fitted(self)
        if n_samples < 1:
            raise ValueError(f"Invalid value for 'n_samples': {n_samples} . The sampling "
                             f"requires at least one sample.")
        rng = check_random_state(self.random_state)
        d = self.means_.shape[1]
        counts = rng.multinomial(n_samples, self.weights_)
        if self.covariance_type == "full":
            parts = [rng.multivariate_normal(m, c, int(n))
                     for m, c, n in zip(self.means_, self.covariances_, counts)]
        elif self.covariance_type == "tied":
            parts = [rng.multivariate_normal(m, self.covariances_, int(n))
                     for m, n in zip(self.means_, counts)]
        else:
            parts = [m + rng.standard_normal(size=(n, d)) * np.sqrt(c)
                     for m, c, n in zip(self.means_, self.covariances_, counts)]
        y = np.concatenate([np.full(n, j, dtype=int) for j, n in enumerate(counts)])
        return np.vstack(parts), y

