"""The Detector's whole state as (JSON-able meta, plain numpy arrays), and back.

No pickle anywhere: ``persistence`` writes this pair as NPZ + JSON manifest. Not saved: the
warm-up buffer (those records were not committed, so a restart replays them) and a refit in
flight (its request is saved and starts again after loading).

Privacy: by default the state holds parameters, summary statistics and scores only, never input
rows (raw or scaled) and never unused buffer slots. Rows live in three places at run time: the
refit ring (raw rows for the next refit), the online-learning queue (scaled rows waiting for the
next EM step) and the drift tests' unfinished reference and partial block (scaled rows). Without
``include_recent_records`` they are left out: after loading, the refit ring and the learning
queue start empty (a pending refit waits for enough new records), and the drift tests collect
their reference, or finish their block, from the next records on. ``include_recent_records=True``
(the daemon's ``checkpoint.include_recent_records``) keeps them: the file then holds raw data.
"""
import os
from dataclasses import replace

import numpy as np

from .._version import __version__
from ..math import compute_precision_cholesky
from ..models import MixtureEnsemble, OnlineGaussianMixture
from ..models.ensemble import is_ensemble_state
from ..models.online import STATE_FORMAT as ONLINE_STATE_FORMAT
from ..models.online import STATE_VERSION as ONLINE_STATE_VERSION
from ..persistence import CheckpointError, loads_state, read_model_file
from .config import DetectorConfig
from .drift import DriftAlarm, DriftMonitor
from .scaler import StandardScaler
from .threshold import PercentileThreshold
from .training import TrainedModel, make_online

STATE_VERSION = 1


def _split(prefix, d, meta, arrays):
    for k, v in d.items():
        if isinstance(v, np.ndarray):
            arrays[f"{prefix}.{k}"] = v
        else:
            meta[k] = v


def _group(prefix, arrays):
    n = len(prefix) + 1
    return {k[n:]: v for k, v in arrays.items() if k.startswith(prefix + ".")}


def detector_state(det, include_recent_records=False):
    """(meta, arrays) for ``Detector.get_state``; input rows only if ``include_recent_records``
    (see the module docstring). Buffers are saved up to their filled size only."""
    meta = {"state_version": STATE_VERSION, "library_version": __version__,
            "config": det.config.to_dict(), "feature_names": det.feature_names,
            "n_features": det.n_features_, "dtype": det.dtype.name,
            "model_version": det.model_version, "counters": dict(det.counters),
            "train_info": det.train_info_, "ready": det.ready}
    arrays = {}
    if det.ready:
        arrays["scaler.mean"] = det.scaler_.mean_
        arrays["scaler.scale"] = det.scaler_.scale_
        meta["model"] = {}
        _split("model", det.model_.get_state(), meta["model"], arrays)
        tmeta, tarr = det.threshold_model_.get_state()
        meta["threshold"] = tmeta
        arrays["threshold.ring"] = tarr["ring"]
        dmeta, darr = det.monitor_.get_state()
        if not include_recent_records:  # rows of [score, scaled features, flag]
            dmeta = dict(dmeta, record=int(dmeta["record"]) + len(darr["rem"]))
            darr = dict(darr, ref_buf=darr["ref_buf"][:0], rem=darr["rem"][:0])
        meta["drift"] = dmeta
        arrays.update({f"drift.{k}": v for k, v in darr.items()})
        m = det.model_
        k, ld = ((m.total_components, (0, m.n_members)) if isinstance(m, MixtureEnsemble)
                 else (det.n_components, (0,)))
        parts = (det._learn if include_recent_records else []) or [
            (np.zeros((0, det.n_features_), dtype=det.dtype), np.zeros((0, k)), np.zeros(ld))]
        arrays["learn.X"] = np.concatenate([p[0] for p in parts])
        arrays["learn.resp"] = np.concatenate([p[1] for p in parts])
        arrays["learn.scores"] = np.concatenate([p[2] for p in parts])
        meta["learn_fill"] = int(det._fill)
        meta["since_change"] = det._since_change
        meta["pending_alarms"] = [{"detector": a.detector, "record": int(a.record),
                                   "change_start": int(a.change_start),
                                   "statistic": float(a.statistic)} for a in det._alarms]
    sch = det.scheduler_
    if sch is not None:
        ring = sch.ring.last(sch.ring.filled) if include_recent_records else \
            np.zeros((0, sch.ring.buf.shape[1]))
        change_start = sch.change_start
        if not include_recent_records:  # no rows before now survive: a refit needs new ones
            change_start = max(change_start, sch.n_seen)
        meta["refit"] = {"ring_layout": "recent", "filled": len(ring), "n_seen": sch.n_seen,
                         "requested": sch.requested or sch.job is not None,
                         "reason": sch.reason or "", "change_start": change_start,
                         "cooldown_until": sch.cooldown_until,
                         "include_recent_records": bool(include_recent_records)}
        arrays["refit.ring"] = ring
    return meta, arrays


def detector_from_state(cls, meta, arrays):
    """A Detector from ``detector_state``'s output (ValueError/KeyError if malformed)."""
    version = meta.get("state_version")
    if not isinstance(version, int) or version > STATE_VERSION:
        raise ValueError(f"detector state version {version!r} is newer than supported "
                         f"({STATE_VERSION})")
    det = cls(DetectorConfig.from_dict(meta["config"]), feature_names=meta["feature_names"],
              dtype=np.dtype(meta["dtype"]))
    det.n_features_ = meta["n_features"]
    det.model_version = int(meta["model_version"])
    det.counters.update(meta["counters"])
    det.train_info_ = meta.get("train_info") or {}
    if "refit" in meta:
        r = meta["refit"]
        det._ensure_scheduler()
        sch = det.scheduler_
        ring = np.array(arrays["refit.ring"], dtype=np.float64)
        if r.get("ring_layout") == "recent":  # the filled rows, oldest first
            cap, d = sch.ring.buf.shape
            if ring.ndim != 2 or ring.shape[1] != d or len(ring) != r["filled"]:
                raise ValueError(f"refit ring has shape {ring.shape}, expected "
                                 f"({r['filled']}, {d})")
            sch.ring.buf[:] = 0.0
            if len(ring):
                sch.ring.push(ring[-cap:])
        else:  # older files: the whole ring and its write position
            if ring.shape != sch.ring.buf.shape:
                raise ValueError(f"refit ring has shape {ring.shape}, "
                                 f"expected {sch.ring.buf.shape}")
            sch.ring.buf[:] = ring
            sch.ring.pos, sch.ring.filled = r["pos"], r["filled"]
        sch.n_seen = r["n_seen"]
        sch.requested, sch.reason = bool(r["requested"]), r["reason"]
        sch.change_start, sch.cooldown_until = r["change_start"], r["cooldown_until"]
    if meta["ready"]:
        scaler = StandardScaler(np.array(arrays["scaler.mean"], dtype=np.float64),
                                np.array(arrays["scaler.scale"], dtype=np.float64))
        model_state = dict(meta["model"])
        model_state.update(_group("model", arrays))
        model = (MixtureEnsemble.from_state(model_state) if is_ensemble_state(model_state)
                 else OnlineGaussianMixture.from_state(model_state))
        threshold = PercentileThreshold.from_state(meta["threshold"],
                                                   {"ring": arrays["threshold.ring"]})
        if scaler.mean_.shape != (det.n_features_,) or model.n_features_in_ != det.n_features_:
            raise ValueError("scaler/model feature count does not match the detector's")
        det.scaler_, det.model_, det.threshold_model_ = scaler, model, threshold
        det.monitor_ = DriftMonitor.from_state(meta["drift"], _group("drift", arrays))
        learn = (np.array(arrays["learn.X"], dtype=det.dtype),
                 np.array(arrays["learn.resp"], dtype=np.float64),
                 np.array(arrays["learn.scores"], dtype=np.float64))
        if not len(learn[0]) == len(learn[1]) == len(learn[2]):
            raise ValueError("learn buffer arrays have different lengths")
        det._learn = [learn] if len(learn[0]) else []
        det._learn_n = len(learn[0])
        # records scored since the last online step (older states: the queued rows)
        det._fill = int(meta.get("learn_fill", det._learn_n))
        det._since_change = meta.get("since_change")
        det._alarms = [DriftAlarm(**a) for a in meta.get("pending_alarms", [])]
    return det


def online_from_params(cfg, weights, means, covariances, covariance_type, n_seen):
    """An online model holding given mixture parameters (statistics from them)."""
    w = np.asarray(weights, dtype=np.float64)
    mu = np.asarray(means, dtype=np.float64)
    cov = np.asarray(covariances, dtype=np.float64)
    k, d = mu.shape
    scatter = {"full": lambda: w[:, None, None] * cov, "tied": lambda: cov.copy(),
               "diag": lambda: w[:, None] * cov, "spherical": lambda: d * w * cov}
    state = make_online(cfg, k).get_params()
    state["covariance_type"] = covariance_type
    state.update({"format": ONLINE_STATE_FORMAT, "format_version": ONLINE_STATE_VERSION,
                  "n_features_in_": d, "n_steps_": 0, "n_seen_": int(n_seen),
                  "n_reseeds_": 0, "n_repairs_": 0, "converged_": True, "n_iter_": 0,
                  "lower_bound_": float("nan"), "last_eta_": 0.0,
                  "stats_s0": w, "stats_means": mu, "stats_scatter": scatter[covariance_type](),
                  "weights_": w, "means_": mu, "covariances_": cov,
                  "precisions_cholesky_": compute_precision_cholesky(cov, covariance_type)})
    return OnlineGaussianMixture.from_state(state)


def detector_from_sklearn(cls, gmm, scaler, percentile, X_fit, feature_names, config):
    """Wrap a fitted scikit-learn GaussianMixture (+ StandardScaler) as a ready Detector.

    The threshold is the ``percentile`` of the log-density of ``X_fit`` (raw rows) if given,
    else of as many rows sampled from the model itself as the threshold's window holds (all
    of them count: the sample comes grouped by component). Neither holds rows a fit dropped
    as far out, so the far-out fence does not set the threshold from the start.
    """
    cfg = config if isinstance(config, DetectorConfig) else DetectorConfig.from_dict(
        dict(config or {}, n_components=int(gmm.n_components),
             covariance_type=gmm.covariance_type))
    cfg = replace(cfg, threshold=replace(cfg.threshold, percentile=float(percentile))).validate()
    d = int(np.shape(gmm.means_)[1])
    if scaler is not None:
        mean = np.asarray(getattr(scaler, "mean_", None) if getattr(scaler, "with_mean", True)
                          else np.zeros(d), dtype=np.float64)
        scale = getattr(scaler, "scale_", None)
        scale = np.ones(d) if scale is None else np.asarray(scale, dtype=np.float64)
        sc = StandardScaler(mean if mean.shape == (d,) else np.zeros(d), scale)
    else:
        sc = StandardScaler(np.zeros(d), np.ones(d))
    lb = getattr(gmm, "lower_bound_", np.nan)
    model = online_from_params(cfg, gmm.weights_, gmm.means_, gmm.covariances_,
                               gmm.covariance_type, n_seen=cfg.warmup_records)
    model.lower_bound_ = float(lb)
    if X_fit is not None:
        Xs = sc.transform(np.asarray(X_fit, dtype=np.float64))
        source = "X_fit"
    else:
        Xs, _ = model.sample(cfg.threshold.window)
        source = "model sample"
    scores = model.score_samples(Xs)
    threshold = PercentileThreshold(cfg.threshold.percentile, cfg.threshold.window).fit(
        scores, gross=())
    names = feature_names if feature_names is not None else _sklearn_names(d, scaler, gmm)
    info = {"imported_from": "scikit-learn", "threshold_source": source,
            "n_records": int(len(Xs)), "n_components": int(gmm.n_components)}
    if names is None:  # fitted on a bare array: columns known by position only
        names, info["positional_features"] = [f"x{j}" for j in range(d)], True
    det = cls(cfg, feature_names=names)
    det.n_features_ = d
    det._ensure_scheduler()
    det._install(TrainedModel(sc, model, threshold, info))
    return det


def _sklearn_names(d, *estimators):
    """The column names scikit-learn kept (``feature_names_in_``, set when fitted on a
    DataFrame) from the first estimator that has d of them, else None."""
    for est in estimators:
        names = getattr(est, "feature_names_in_", None)
        if names is not None and len(names) == d:
            return [str(n) for n in names]
    return None


def load_detector(cls, path, trusted=False):
    """``Detector.load``: an NPZ checkpoint, or (trusted only) a joblib file holding our
    export or scikit-learn objects."""
    path = os.fspath(path)
    kind, payload = read_model_file(path, trusted)
    if kind == "object":
        return _detector_from_object(cls, payload, path)
    return _from_verified(cls, payload, path)


def detector_from_bytes(cls, data, origin="state"):
    """``Detector.loads``: checkpoint bytes (``Detector.dumps``) verified, then rebuilt."""
    return _from_verified(cls, loads_state(data, origin), origin)


def _from_verified(cls, state, origin):
    meta, arrays = state
    try:
        return cls.from_state(meta, arrays)
    except CheckpointError:
        raise
    except (KeyError, ValueError, TypeError, IndexError, AttributeError) as exc:
        raise CheckpointError(f"{origin}: incompatible checkpoint content "
                              f"({type(exc).__name__}: {exc})") from None


def _detector_from_object(cls, obj, path):
    """A Detector from scikit-learn objects a trusted joblib file held."""
    try:
        gmm, scaler = _find_sklearn(obj)
    except ValueError as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    if gmm is None:
        raise CheckpointError(f"{path}: holds {type(obj).__name__}, not a streamgmm export "
                              f"or a fitted scikit-learn GaussianMixture")
    return cls.from_sklearn(gmm, scaler)


def _find_sklearn(obj):
    """(GaussianMixture, StandardScaler or None) from a model, a dict, a tuple or a Pipeline.
    Any other transformer among them (a RobustScaler, PCA, ...) is refused with a ValueError
    naming it: scoring without it would score other inputs than the model was fitted on."""
    def is_gmm(o):
        return hasattr(o, "precisions_cholesky_") and hasattr(o, "weights_")

    def is_scaler(o):
        return type(o).__name__ == "StandardScaler" and hasattr(o, "scale_")

    def is_estimator(o):
        return hasattr(o, "fit") or hasattr(o, "transform")

    if is_gmm(obj):
        return obj, None
    items = []
    if isinstance(obj, dict):
        items = [(repr(k), o) for k, o in obj.items()]
    elif isinstance(obj, (list, tuple)):
        items = [(f"item {i}", o) for i, o in enumerate(obj)]
    elif hasattr(obj, "steps"):
        items = [(f"step {name!r}", o) for name, o in obj.steps]
    ordered = hasattr(obj, "steps")  # a Pipeline applies its steps in order
    gmm = scaler = None
    for where, o in items:
        if is_gmm(o) and gmm is None:
            gmm = o
        elif is_scaler(o) and scaler is None and not (ordered and gmm is not None):
            scaler = o
        elif is_estimator(o):
            what = ("after the GaussianMixture" if gmm is not None and
                    (is_scaler(o) or is_gmm(o)) else "")
            raise ValueError(
                f"{where} is a {type(o).__name__}{' ' + what if what else ''}: only a "
                f"GaussianMixture, optionally after one StandardScaler, can be imported "
                f"(its scores would not be the model's without that step)")
    return gmm, scaler
