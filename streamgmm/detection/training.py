"""Fitting a detector's model on a window of records: scale, fit, drop outliers, refit.

The seeds' recipe for contaminated training data. Records far below the bulk of the
log-density (Tukey's far-out fence, Q1 - 3 IQR) and records whose most likely component is a
tiny one (weight < ``min_component_weight``: a cluster of anomalies the first fit gave a
component of its own) are dropped; scaler and model are then fitted again on the rest, and the
threshold is the p-th percentile of the clean records' scores.

With ``n_components: "auto"`` (the default) the model is a ``MixtureEnsemble`` rather than one
BIC-selected mixture: full-covariance mixtures of 4, 2 and 1 components and diagonal ones of
4, 8 and 1 (capped at ``max_components`` and at one component per 10 records), each fitted
with the recipe above (the one-component members on the rows at least half of the members
keep: their own fence would drop whole minor modes) and a covariance floor of max(``ENSEMBLE_REG_COVAR``, d / n) (shrinkage
towards the identity in standardized units, stronger for small or wide windows; with
``robust_dof`` the full ones as robust M-estimates, Student-t weights), scored
together (a record's score is its lowest member z-score, a full member's z at half weight,
see ``MixtureEnsemble``). Measured on
real labelled data it ranks anomalies better than any single mixture we tried, BIC selection
included (which gives components to anomaly clusters); see BENCHMARKS.md.
"""
import time
from dataclasses import dataclass, field

import numpy as np

from ..models import GaussianMixture, MixtureEnsemble, OnlineGaussianMixture, select_model
from .scaler import StandardScaler
from .threshold import PercentileThreshold


# EM restarts per fit: one k-means start lands in a poor local optimum for some seeds (online
# EM cannot leave it later), three make that rare; fits run at warm-up or off the hot path.
N_INIT = 3

# The auto ensemble: (covariance type, components) of its members, the primary first; "cfg"
# stands for the configured covariance type. Covariance floor of its members (reg_covar is
# raised to it; the scaled features have unit variance: a light shrinkage, 0.1%).
# The diagonal single Gaussian (each feature's own mean and variance, like a histogram-based
# outlier score) catches records extreme in a few features that the wider members dilute.
ENSEMBLE_MEMBERS = (("cfg", 4), ("cfg", 2), ("cfg", 1), ("diag", 4), ("diag", 8), ("diag", 1))
ENSEMBLE_REG_COVAR = 1e-3
# Weight of the full-covariance members in the lowest-z combination (the diagonal ones have 1):
# a full member's z counts half, so it sets a record's score only where it finds the record
# twice as far out as every diagonal member does. Full covariances are the members that can
# absorb a small cluster of anomalies along their tight directions and that cry wolf on
# out-of-sample normal records in wide windows; measured on real data (BENCHMARKS.md, "Full
# members at half weight"): mean average precision up on every collection measured, ROC-AUC
# level on ADBench's twelve and 0.003-0.005 lower on the others; letter and Wilt lose most.
# Robust full members (``robust_dof``), which keep such clusters out, count in full (measured:
# better ranking at weight 1 than at 0.5).
FULL_MEMBER_WEIGHT = 0.5
# Shrinkage that grows with the window's width: the covariance floor is at least
# ENSEMBLE_SHRINK * d / n (n records of d standardized features), e.g. 0.03 for d=64 on
# 2,000 records, 0.05 for d=21 on 420, and stays 1e-3 on long or narrow windows.
ENSEMBLE_SHRINK = 1.0
# With ``detector.robust_dof`` (off by default) the full-covariance members are robust
# M-estimates: Student-t weights in their statistics (``OnlineGaussianMixture.robust_dof``), so
# a small cluster of anomalies or a few far records in the window widen them less and stay far
# out. Diagonal members stay plain: one record-level weight would discount all of a record's
# features for one extreme feature. Measured in BENCHMARKS.md ("Robust full members"): a gain
# with a few % of clustered anomalies in the window, none at 1%, and on streams whose normal
# holds small modes of its own those modes are flagged.


@dataclass
class TrainedModel:
    """Everything a (re)fit produces; swapped into the Detector as one unit."""

    scaler: StandardScaler
    model: object
    threshold: PercentileThreshold
    info: dict = field(default_factory=dict)
    # True for the fit window's rows the fit kept (not far out, not in a tiny component)
    clean: np.ndarray = None


def _fit_gmm(Xs, cfg, n_components):
    if n_components == "auto":
        kmax = int(min(cfg.max_components, max(1, len(Xs) // 10)))
        res = select_model(Xs, n_components=range(1, kmax + 1),
                           covariance_types=(cfg.covariance_type,), criterion="bic",
                           random_state=cfg.random_state, reg_covar=cfg.reg_covar,
                           n_init=N_INIT)
        return res.best_model, res.table
    gmm = GaussianMixture(n_components, covariance_type=cfg.covariance_type,
                          reg_covar=cfg.reg_covar, random_state=cfg.random_state,
                          n_init=N_INIT)
    return gmm.fit(Xs), None


def outlier_mask(gmm, Xs, min_component_weight, fence_iqr=3.0):
    """True for records to keep: above the far-out fence and not in a tiny component."""
    scores = gmm.score_samples(Xs)
    q1, q3 = np.percentile(scores, [25, 75])
    keep = scores >= q1 - fence_iqr * (q3 - q1)
    tiny = np.flatnonzero(gmm.weights_ < min_component_weight)
    if len(tiny) and len(tiny) < gmm.n_components:
        keep &= ~np.isin(gmm.predict(Xs), tiny)
    return keep, len(tiny)


def make_online(cfg, n_components, covariance_type=None, reg_covar=None, robust_dof=None):
    """The streaming model with the detector's online settings."""
    o = cfg.online
    return OnlineGaussianMixture(
        n_components=n_components, covariance_type=covariance_type or cfg.covariance_type,
        step=o.step, alpha=o.alpha, t0=o.t0, half_life=o.half_life,
        reg_covar=cfg.reg_covar if reg_covar is None else reg_covar,
        random_state=cfg.random_state, robust_dof=robust_dof)


def ensemble_specs(cfg, n_records):
    """The auto ensemble's distinct (covariance type, components), primary first."""
    kmax = int(min(cfg.max_components, max(1, n_records // 10)))
    out = []
    for ct, k in ENSEMBLE_MEMBERS:
        spec = (cfg.covariance_type if ct == "cfg" else ct, min(k, kmax))
        if spec not in out:
            out.append(spec)
    return out


def _fit_gmm_member(Xs, cfg, covariance_type, k, reg, n_init=N_INIT):
    """One member's batch fit (its online model starts from it)."""
    return GaussianMixture(k, covariance_type=covariance_type, reg_covar=reg,
                           random_state=cfg.random_state, n_init=n_init).fit(Xs)


def fit_ensemble(X_raw, cfg, dtype=np.float64, specs=None, n_init=N_INIT):
    """(scaler, ensemble, scaled rows, clean-row mask) for the auto model; ``specs`` (the
    members' (covariance type, components)) defaults to ``ensemble_specs``."""
    scaler = StandardScaler().fit(X_raw)
    Xs = scaler.transform(X_raw, dtype)
    reg = max(float(cfg.reg_covar), ENSEMBLE_REG_COVAR,
              ENSEMBLE_SHRINK * Xs.shape[1] / max(len(Xs), 1))
    specs = ensemble_specs(cfg, len(Xs)) if specs is None else specs
    fits, own, votes = [], [], np.zeros(len(Xs))
    for ct, k in specs:  # each member's own view of what is far out
        gmm = _fit_gmm_member(Xs, cfg, ct, k, reg, n_init)
        kept, _ = outlier_mask(gmm, Xs, cfg.min_component_weight)
        fits.append(gmm)
        own.append(kept)
        votes += kept
    keep = votes >= len(specs) / 2.0  # clean: kept by at least half of the members
    members = []
    for (ct, k), gmm, kept in zip(specs, fits, own):
        # A one-component member's own fence drops whole minor modes of multi-modal data
        # (one Gaussian over several clusters has a long lower tail), and online learning
        # then pulls them back in, moving its scores for thousands of records while the
        # threshold window lags (0-2.5p flagged on stationary generated streams): it is
        # refitted on the rows the members agree are clean instead.
        mask = keep if k == 1 else kept
        if mask.all() or mask.sum() < max(2 * k, 10):
            mask = np.ones(len(Xs), dtype=bool)
        else:
            gmm = _fit_gmm_member(Xs[mask], cfg, ct, k, reg, n_init)
        dof = cfg.robust_dof if ct == "full" else None
        members.append(make_online(cfg, k, ct, reg, dof).fit_from(gmm, Xs[mask]))
    weights = [FULL_MEMBER_WEIGHT if m.covariance_type == "full" and not m.robust_dof else 1.0
               for m in members]
    return scaler, MixtureEnsemble(members).calibrate(Xs, weights), Xs, keep


def fit_window(X_raw, cfg, dtype=np.float64):
    """Fit scaler, mixture and threshold on raw records ``X_raw`` (n, d)."""
    t_start = time.perf_counter()
    X_raw = np.asarray(X_raw, dtype=np.float64)
    if cfg.n_components == "auto":
        scaler, model, Xs, keep = fit_ensemble(X_raw, cfg, dtype)
        scores = model.score_samples(Xs[keep])
        # in-sample scores of the kept rows: the dropped (gross) ones lie below their
        # percentile, so the fence need not bind from the start (see PercentileThreshold.fit)
        threshold = PercentileThreshold(cfg.threshold.percentile,
                                        cfg.threshold.window).fit(scores, gross=())
        info = {"n_records": int(len(X_raw)), "n_dropped": int((~keep).sum()),
                "n_tiny_components_dropped": 0, "n_components": int(model.n_components),
                "members": [{"covariance_type": m.covariance_type,
                             "n_components": int(m.n_components)} for m in model.members],
                "mean_log_likelihood": float(np.mean(model.members[0].score_samples(
                    Xs[keep]))),
                "fit_seconds": round(time.perf_counter() - t_start, 4),
                "fitted_at": time.time()}
        return TrainedModel(scaler, model, threshold, info, keep)
    scaler = StandardScaler().fit(X_raw)
    Xs = scaler.transform(X_raw, dtype)
    gmm, table = _fit_gmm(Xs, cfg, cfg.n_components)
    keep, n_tiny = outlier_mask(gmm, Xs, cfg.min_component_weight)
    k = gmm.n_components
    if not keep.all() and keep.sum() >= max(2 * k, 10):
        scaler = StandardScaler().fit(X_raw[keep])
        Xs = scaler.transform(X_raw[keep], dtype)
        if cfg.n_components == "auto":
            k = max(1, k - n_tiny)
        gmm, _ = _fit_gmm(Xs, cfg, k)
    else:
        keep[:] = True
    model = make_online(cfg, k).fit_from(gmm, Xs)
    scores = model.score_samples(Xs)
    threshold = PercentileThreshold(cfg.threshold.percentile, cfg.threshold.window).fit(
        scores, gross=())  # the kept rows' scores, as above
    info = {"n_records": int(len(X_raw)), "n_dropped": int((~keep).sum()),
            "n_tiny_components_dropped": int(n_tiny), "n_components": int(k),
            "mean_log_likelihood": float(np.mean(scores)),
            "fit_seconds": round(time.perf_counter() - t_start, 4),
            "fitted_at": time.time()}
    if table is not None:
        info["selection"] = [{kk: (float(v) if isinstance(v, (np.floating, float)) else v)
                              for kk, v in row.items()} for row in table]
    return TrainedModel(scaler, model, threshold, info, keep)
