"""Compressed topics: input produced with each codec is consumed through the broker, every
record's outcome arrives, and the daemon's own output batches use `kafka.compression_type`."""
from __future__ import annotations

import json

import pytest

from kafka_helpers import (
    DaemonThread, committed_offsets, daemon_config, free_port, make_producer, metric,
    mixture_rows, raw_batches, read_topic, scrape, to_record, unique, wait_for,
)

pytestmark = pytest.mark.timeout(120)

CODEC_ID = {"none": 0, "gzip": 1, "snappy": 2, "lz4": 3, "zstd": 4}


@pytest.mark.parametrize("codec", ["gzip", "snappy", "lz4", "zstd", "none"])
def test_compressed_topics_in_and_out(bootstrap, make_topics, codec):
    src, out, dlq = make_topics(f"z{codec}-in", f"z{codec}-out", f"z{codec}-dlq")
    group = unique("g-z")
    X = mixture_rows(600, seed=11)
    values, good_keys, bad = [], [], {}
    for i, x in enumerate(X):
        values.append(json.dumps(to_record(i, x)).encode())
        good_keys.append(f"r{i}")
        if i % 100 == 50:  # bad records spread through the stream, in compressed batches too
            bad[len(values)] = b'{"id": "bad-%d", "amount": 1,' % i
            values.append(bad[len(values)])
    p = make_producer(bootstrap, linger_ms=20, batch_size=64 * 1024,
                      compression_type=None if codec == "none" else codec)
    try:
        for v in values:
            p.send(src, v)
        p.flush(10)
    finally:
        p.close()
    stored = raw_batches(bootstrap, src)
    assert sum(n for _, n in stored) == len(values)
    assert {c for c, _ in stored} == {CODEC_ID[codec]}   # the input really is compressed
    assert len(stored) < len(values) / 10                # in multi-record batches

    port = free_port()
    cfg = daemon_config(bootstrap, src, out, dlq, group, warmup=200, metrics_port=port,
                        emit="all", kafka={"compression_type": codec})
    d = DaemonThread(cfg).start()
    try:
        wait_for(lambda: metric(scrape(port)[1], "streamgmm_records_processed_total")
                 == len(good_keys), 60, what="every good record scored")
        wait_for(lambda: metric(scrape(port)[1], "streamgmm_dead_letters_total",
                                reason="invalid_json") == len(bad), 30, what="dead letters")
    finally:
        assert d.stop() == 0

    events = read_topic(bootstrap, out, min_records=len(good_keys))
    assert sorted(json.loads(e.value)["key"] for e in events) == sorted(good_keys)
    dead = read_topic(bootstrap, dlq, min_records=len(bad))
    assert sorted(r.value for r in dead) == sorted(bad.values())
    assert sorted(int(dict(r.headers)["__streamgmm.errors.offset"]) for r in dead) == sorted(bad)
    assert list(committed_offsets(bootstrap, group).values()) == [len(values)]
    for topic, n in ((out, len(good_keys)), (dlq, len(bad))):
        batches = raw_batches(bootstrap, topic)
        assert sum(k for _, k in batches) == n
        assert {c for c, _ in batches} == {CODEC_ID[codec]}, (topic, batches)


def test_compression_type_is_checked_and_reaches_the_producer(bootstrap):
    from streamgmm.service.config import ConfigError, config_from_dict
    from streamgmm.service.kafka_io import make_producer as daemon_producer

    base = daemon_config(bootstrap, "in", "out", "dlq", "g")
    with pytest.raises(ConfigError) as err:
        config_from_dict({**base, "kafka": {**base["kafka"], "compression_type": "brotli"}},
                         environ={})
    assert str(err.value).startswith("kafka.compression_type:")
    for codec, expected in (("none", None), ("lz4", "lz4")):
        cfg = config_from_dict({**base, "kafka": {**base["kafka"], "compression_type": codec}},
                               environ={})
        assert cfg.kafka.compression_type == codec
        p = daemon_producer(cfg.kafka)
        try:
            assert p.config["compression_type"] == expected
        finally:
            p.close()
    assert config_from_dict(base, environ={}).kafka.compression_type == "none"
