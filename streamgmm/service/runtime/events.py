"""The JSON event emitted per scored record, record timestamps, and dead-letter class names."""
from __future__ import annotations

import operator
from datetime import datetime, timezone

import numpy as np


def iso_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def key_text(key):
    if key is None or isinstance(key, str):
        return key
    if isinstance(key, (bytes, bytearray)):
        return key.decode("utf-8", errors="replace")
    return key


def make_event(rec, key, ts_ms, score, threshold, anomaly, component, contributions,
               model_version, detected_at, rarity=float("nan"), severity=float("nan")) -> dict:
    """The JSON object emitted for one scored record. ``rarity``: the fraction of recent
    normal scores below this one; ``severity``: -log10(rarity), what alerts are set on."""
    return {
        "topic": rec.topic,
        "partition": rec.partition,
        "offset": rec.offset,
        "key": key,
        "timestamp": None if ts_ms != ts_ms else int(ts_ms),
        "score": float(score),
        "threshold": float(threshold),
        "anomaly": bool(anomaly),
        "rarity": float(rarity),
        "severity": round(float(severity), 3),
        "component": int(component),
        "top_features": [{"feature": f, "share": round(float(s), 6)}
                         for f, s in (contributions or [])],
        "model_version": int(model_version),
        "detected_at": detected_at,
    }


def record_ts_ms(recs, dec_ts) -> np.ndarray:
    """Record timestamps in ms: the Kafka timestamp, else `records.timestamp_field`."""
    try:  # Kafka records: an int each, gathered without a Python loop
        ts = np.fromiter(map(_TIMESTAMP, recs), dtype=float, count=len(recs))
    except TypeError:  # None among them (local records)
        ts = np.array([r.timestamp for r in recs], dtype=float)  # None -> NaN
    ts[ts < 0] = np.nan  # -1: no timestamp (old message formats)
    if dec_ts is not None:
        missing = np.isnan(ts)
        if missing.any():
            alt = np.asarray(dec_ts, dtype=float)
            if alt.shape == ts.shape:
                ts[missing] = alt[missing] * _TS_FIELD_TO_MS
    return ts


_TIMESTAMP = operator.attrgetter("timestamp")

# records.decode_batch gives timestamp_field values in epoch seconds.
_TS_FIELD_TO_MS = 1000.0

# Exception class named in dead-letter headers, per decode reason.
DEAD_LETTER_CLASS = {
    "invalid_json": "streamgmm.records.InvalidJSON",
    "not_object": "streamgmm.records.NotAnObject",
    "missing_field": "streamgmm.records.MissingField",
    "non_numeric": "streamgmm.records.NonNumeric",
    "non_finite": "streamgmm.records.NonFinite",
    "too_large": "streamgmm.records.TooLarge",
}
