"""End to end on the real test broker: records in, anomaly events and dead letters out,
metrics scraped over HTTP and checked by promtool."""
from __future__ import annotations

import json
import math
import platform

import numpy as np
import pytest

import streamgmm

from kafka_helpers import (
    DaemonThread, anomaly_rows, committed_offsets, daemon_config, free_port, http_get, metric,
    mixture_rows, produce, promtool_check, read_topic, scrape, to_record, unique, wait_for,
)

pytestmark = pytest.mark.timeout(120)

EVENT_FIELDS = {"topic", "partition", "offset", "key", "timestamp", "score", "threshold",
                "anomaly", "rarity", "severity", "component", "top_features", "model_version",
                "detected_at"}


def test_anomalies_out_metrics_agree_promtool_clean(bootstrap, make_topics):
    src, out, dlq = make_topics("e2e-in", "e2e-out", "e2e-dlq", partitions=2)
    n_normal, n_anom, pct = 3000, 20, 2.0
    X = mixture_rows(n_normal, seed=11)
    A = anomaly_rows(n_anom, seed=12)
    records = [to_record(i, x) for i, x in enumerate(X)]
    # anomalies only after the warm-up part of the stream
    slots = np.linspace(1000, n_normal - 1, n_anom).astype(int)
    for j, (s, a) in enumerate(zip(slots, A)):
        records.insert(int(s) + j, to_record(100000 + j, a, "anomaly"))
    bad = [b"not json", b"[1,2]", json.dumps({"id": "bad", "amount": 1}).encode()]
    values = [json.dumps(r).encode() for r in records] + bad
    keys = [r["id"] for r in records] + [None, None, None]
    produce(bootstrap, src, values, keys=keys)
    n_in = len(records)

    port = free_port()
    cfg = daemon_config(bootstrap, src, out, dlq, unique("g-e2e"), warmup=500, percentile=pct,
                        metrics_port=port)
    d = DaemonThread(cfg).start()
    try:
        wait_for(lambda: metric(scrape(port)[1], "streamgmm_records_processed_total") == n_in,
                 60, what="all records scored")
        text, m = scrape(port)
        events = read_topic(bootstrap, out, min_records=int(m[
            ("streamgmm_anomalies_total", frozenset())]))
        status_h, _ = http_get(f"http://127.0.0.1:{port}/healthz")
        status_r, body_r = http_get(f"http://127.0.0.1:{port}/readyz")
        wait_for(lambda: all(v == 0 for (n, _), v in scrape(port)[1].items()
                             if n == "streamgmm_consumer_lag_records"), 10, what="lag 0")
        lag_labels = {dict(lbl)["partition"] for (n, lbl) in scrape(port)[1]
                      if n == "streamgmm_consumer_lag_records"}
    finally:
        code = d.stop()
    assert code == 0

    # --- the anomaly topic: all planted anomalies, about p% of the normal records
    docs = [json.loads(e.value) for e in events]
    where = {r.key.decode(): (r.partition, r.offset, r.timestamp)
             for r in read_topic(bootstrap, src, min_records=n_in + len(bad)) if r.key}
    assert docs and all(EVENT_FIELDS <= set(doc) for doc in docs)
    flagged = {doc["key"] for doc in docs}
    planted = {f"r{100000 + j}" for j in range(n_anom)}
    assert planted <= flagged, f"missed anomalies: {planted - flagged}"
    normal_rate = len(flagged - planted) / n_normal
    assert 0.25 * pct / 100 <= normal_rate <= 3 * pct / 100, normal_rate
    for doc in docs:
        assert doc["anomaly"] is True and doc["score"] < doc["threshold"]
        # the input record's own position and timestamp, not just plausible numbers
        assert doc["topic"] == src
        assert (doc["partition"], doc["offset"], doc["timestamp"]) == where[doc["key"]]
        assert doc["model_version"] >= 1
        assert 0 <= doc["component"] < 3 and doc["detected_at"].endswith("Z")
        assert 1 <= len(doc["top_features"]) <= 3
        # flagged iff rarity < p/100 (same window snapshot as the threshold)
        assert 0 < doc["rarity"] <= 1.5 * pct / 100, doc
        assert doc["severity"] == pytest.approx(-math.log10(doc["rarity"]), abs=1e-3)
        assert {t["feature"] for t in doc["top_features"]} <= set(
            ["amount", "latency_ms", "sensor.temp", "sensor.rpm"])
    by_key = {doc["key"]: doc for doc in docs}
    one = by_key["r100000"]
    assert one["score"] < one["threshold"] - 10  # far away: far below the threshold
    assert one["severity"] > 4  # rarer than 1 in 10,000 recent records

    # --- metrics agree with what was sent
    assert metric(m, "streamgmm_records_processed_total") == n_in
    assert metric(m, "streamgmm_anomalies_total") == len(docs)
    assert metric(m, "streamgmm_dead_letters_total", reason="invalid_json") == 1
    assert metric(m, "streamgmm_dead_letters_total", reason="not_object") == 1
    assert metric(m, "streamgmm_dead_letters_total", reason="missing_field") == 1
    assert metric(m, "streamgmm_dead_letters_total", reason="non_finite") == 0
    assert metric(m, "streamgmm_log_density_count") == n_in
    assert metric(m, "streamgmm_record_age_seconds_count") == n_in
    assert metric(m, "streamgmm_target_anomaly_ratio") == pytest.approx(pct / 100)
    assert metric(m, "streamgmm_model_components") == 3
    assert metric(m, "streamgmm_model_version") >= 1
    assert metric(m, "streamgmm_ready") == 1
    thresholds = [doc["threshold"] for doc in docs]  # the threshold moves with online learning
    assert min(thresholds) - 1 <= metric(m, "streamgmm_threshold") <= max(thresholds) + 1
    assert metric(m, "streamgmm_build_info", version=streamgmm.__version__,
                  python_version=platform.python_version()) == 1
    assert metric(m, "streamgmm_rebalances_total") >= 1
    assert metric(m, "streamgmm_batch_duration_seconds_count") >= 1
    assert 0 < metric(m, "streamgmm_anomaly_ratio") < 0.1
    assert lag_labels == {"0", "1"}
    assert status_h == 200 and status_r == 200, body_r

    # --- promtool is silent on the scraped page
    rc, output = promtool_check(text)
    assert rc == 0 and output.strip() == "", output

    # --- everything committed after the clean stop
    dl = read_topic(bootstrap, dlq, min_records=3)
    assert len(dl) == 3
    committed = committed_offsets(bootstrap, cfg["kafka"]["group_id"])
    total = sum(committed.values())
    assert total == len(values), committed
