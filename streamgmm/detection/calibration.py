"""Out-of-sample scores for a fit window, so the threshold starts calibrated.

A model scores the records it was fitted on higher than new records (more so for small or
wide fit windows), so the p-th percentile of in-sample scores flags more than p% of the
stream. K-fold cross-validation of the whole training procedure gives each fit-window record
a held-out score; each fold's scores are shifted onto the final model's scale (by the
difference of the in-sample medians of the final and the fold model), and the threshold
ring starts from them. A window too small for folds of ten rows (under 50 with the default
five) is cross-validated leave-one-out: its in-sample scores would flag several times p of
the records that follow.

For the auto model (a ``MixtureEnsemble``) the folds are ensembles with the final model's
members: each member's held-out log-densities are shifted onto the final member's scale (the
same median difference, member by member) and combined by the final model's ``combine``, so
the threshold starts from held-out scores of the score it thresholds (the lowest member
z-score has a heavier lower tail than any one mixture's log-density).
"""
import dataclasses

import numpy as np

# EM starts of each member in a calibration fold of an ensemble (the final fit uses
# training.N_INIT): the folds only place the threshold, and six members per fold cost.
FOLD_N_INIT = 1


def _n_folds(n, folds, k):
    """Folds for ``n`` rows and a model of ``k`` components: ``folds`` while each holds at
    least max(2k, 10) rows, else leave-one-out (a small warm-up: the in-sample scores that
    would stand in score the model's own rows, and flagged 3.6-10% of the next 100 records
    after 16-40-row warm-ups); None when folds < 2 or a fold model would get under 2k rows."""
    if folds < 2 or n - 1 < 2 * k:
        return None
    return folds if n >= folds * max(2 * k, 10) else n


def held_out_scores(X_raw, trained, cfg, fit_fn, folds, random_state=0):
    """(held-out scores of the records of ``X_raw`` on ``trained``'s scale, one per row, not
    all finite; the number of folds used), or (None, 0).

    ``fit_fn(X, cfg)`` is the training procedure (``training.fit_window``); the folds use the
    final model's component count (no new model selection), ``folds`` in [2, 10] (fewer rows
    than that many folds of 10: leave-one-out, see ``_n_folds``).
    """
    n = len(X_raw)
    if hasattr(trained.model, "members"):
        return _held_out_ensemble(X_raw, trained, cfg, folds, random_state)
    k_final = int(trained.model.n_components)
    folds = _n_folds(n, folds, k_final)
    if folds is None:
        return None, 0
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
    return out, folds


def _held_out_ensemble(X_raw, trained, cfg, folds, random_state=0):
    """``held_out_scores`` for a ``MixtureEnsemble``: folds fitted as ensembles of the final
    model's members, member log-densities shifted member by member, combined as the final."""
    from .training import fit_ensemble  # training imports nothing from here; no cycle
    ens = trained.model
    n = len(X_raw)
    specs = [(m.covariance_type, int(m.n_components)) for m in ens.members]
    kmax = max(k for _, k in specs)
    folds = _n_folds(n, folds, kmax)
    if folds is None:
        return None, 0
    rng = np.random.default_rng(random_state)
    fold_of = rng.permutation(n) % folds
    Xs = trained.scaler.transform(X_raw)
    med_final = np.array([np.median(m.score_samples(Xs)) for m in ens.members])
    logd = np.empty((n, len(specs)))
    for f in range(folds):
        test = fold_of == f
        scaler, fe, Xtr, _ = fit_ensemble(X_raw[~test], cfg, specs=specs,
                                           n_init=FOLD_N_INIT)
        Xte = scaler.transform(X_raw[test])
        for j, m in enumerate(fe.members):
            logd[test, j] = (m.score_samples(Xte)
                             + (med_final[j] - float(np.median(m.score_samples(Xtr)))))
    return ens.combine(logd), folds
