"""Out-of-sample scores for a fit window, so the threshold starts calibrated.

A model scores the records it was fitted on higher than new records (more so for small or
wide fit windows), so the p-th percentile of in-sample scores flags more than p% of the
stream. K-fold cross-validation of the whole training procedure gives each fit-window record
a held-out score; each fold's scores are shifted onto the final model's scale (by the
difference of the in-sample medians of the final and the fold model), and the threshold
ring starts from them.
"""
import dataclasses

import numpy as np


def held_out_scores(X_raw, trained, cfg, fit_fn, folds, random_state=0):
    """Held-out scores of the records of ``X_raw`` on ``trained``'s scale, or None.

    ``fit_fn(X, cfg)`` is the training procedure (``training.fit_window``); the folds use the
    final model's component count (no new model selection), ``folds`` in [2, 10].
    """
    n = len(X_raw)
    k_final = int(trained.model.n_components)
    if folds < 2 or n < folds * max(2 * k_final, 10):
        return None
    fold_cfg = dataclasses.replace(cfg, n_components=k_final)
    rng = np.random.default_rng(random_state)
    fold_of = rng.permutation(n) % folds
    final_in = trained.model.score_samples(trained.scaler.transform(X_raw))
    med_final = float(np.median(final_in))
    out = np.empty(n)
    for f in range(folds):
        test = fold_of == f
        t = fit_fn(X_raw[~test], fold_cfg)
        s_in = t.model.score_samples(t.scaler.transform(X_raw[~test]))
        s_out = t.model.score_samples(t.scaler.transform(X_raw[test]))
        out[test] = s_out + (med_final - float(np.median(s_in)))
    return out[np.isfinite(out)]
