"""Every kind of bad record lands in the dead-letter topic, value intact, with headers naming
where it came from and why; the stream goes on around it."""
from __future__ import annotations

import json

import pytest

from kafka_helpers import (
    DaemonThread, daemon_config, free_port, metric, mixture_rows, produce, read_topic, scrape,
    to_record, unique, wait_for,
)

pytestmark = pytest.mark.timeout(120)

P = "__streamgmm.errors."


@pytest.mark.parametrize("worker", ["0", "1"], ids=["inline", "decode-worker"])
def test_each_bad_record_kind_is_dead_lettered_with_headers(bootstrap, make_topics, worker,
                                                             monkeypatch):
    """Also through the decode worker process (forced on, small polls so batches are full:
    on a 2-CPU machine it is off by default)."""
    monkeypatch.setenv("STREAMGMM_DECODE_WORKER", worker)
    src, out, dlq = make_topics("dl-in", "dl-out", "dl-dlq")
    group = unique("g-dl")
    X = mixture_rows(400, seed=3)
    good = [json.dumps(to_record(i, x)).encode() for i, x in enumerate(X)]
    ok = to_record(0, X[0])
    bad = {
        "invalid_json": b'{"id": "x", "amount": 1,',
        "not_object": b'[1, 2, 3]',
        "missing_field": json.dumps({k: v for k, v in ok.items() if k != "latency_ms"}).encode(),
        "non_numeric": json.dumps({**ok, "amount": "12.5"}).encode(),
        "non_finite": b'{"id": "n", "amount": NaN, "latency_ms": 1, '
                      b'"sensor": {"temp": 1, "rpm": 1}}',
        "non_finite_inf": b'{"id": "i", "amount": 1, "latency_ms": Infinity, '
                          b'"sensor": {"temp": 1, "rpm": 1}}',
        "too_large": json.dumps({**ok, "pad": "x" * 3000}).encode(),
    }
    # bad records spread through the stream (several during warm-up, several after)
    values, keys, bad_at = [], [], {}
    bad_items = list(bad.items())
    for i, v in enumerate(good):
        if i % 50 == 25 and bad_items:
            kind, raw = bad_items.pop(0)
            bad_at[len(values)] = kind
            values.append(raw)
            keys.append(f"bad-{kind}")
        values.append(v)
        keys.append(None)
    produce(bootstrap, src, values, keys=keys,
            headers=None)  # plus one with a header of its own:
    produce(bootstrap, src, [b"\xff\xfe not utf-8"], keys=["bad-bytes"],
            headers=[("trace-id", b"abc123")])

    port = free_port()
    cfg = daemon_config(bootstrap, src, out, dlq, group, warmup=100, metrics_port=port,
                        emit="all", records={"max_bytes": 2048},
                        kafka={"max_poll_records": 500 if worker == "0" else 40})
    d = DaemonThread(cfg).start()
    try:
        assert (d.daemon.worker is not None) == (worker == "1")
        wait_for(lambda: metric(scrape(port)[1], "streamgmm_records_processed_total")
                 == len(good), 60, what="good records scored")
        _, m = scrape(port)
    finally:
        assert d.stop() == 0

    dead = read_topic(bootstrap, dlq, min_records=len(bad) + 1)
    assert len(dead) == len(bad) + 1
    by_key = {r.key.decode(): r for r in dead}
    for offset, kind in bad_at.items():
        r = by_key[f"bad-{kind}"]
        h = {k: v.decode() for k, v in r.headers}
        reason = "non_finite" if kind.startswith("non_finite") else kind
        assert r.value == bad[kind]                       # the original bytes, untouched
        assert h[P + "topic"] == src
        assert h[P + "partition"] == "0"
        assert h[P + "offset"] == str(offset)
        assert h[P + "group"] == group
        assert h[P + "reason"] == reason
        assert h[P + "message"]
        assert h[P + "exception.class"]
    assert "amount" in dict(by_key["bad-non_numeric"].headers)[P + "message"].decode()
    assert "latency_ms" in dict(by_key["bad-missing_field"].headers)[P + "message"].decode()
    raw = by_key["bad-bytes"]
    assert raw.value == b"\xff\xfe not utf-8"
    assert ("trace-id", b"abc123") in raw.headers          # original headers kept
    assert dict(raw.headers)[P + "reason"] == b"invalid_json"

    # the stream went on: every good record (before and after each bad one) has an output
    events = read_topic(bootstrap, out, min_records=len(good))
    assert sorted(json.loads(e.value)["key"] for e in events) == sorted(
        f"r{i}" for i in range(len(good)))
    assert metric(m, "streamgmm_dead_letters_total", reason="non_finite") == 2
    for reason in ("invalid_json",):
        assert metric(m, "streamgmm_dead_letters_total", reason=reason) == 2
    for reason in ("not_object", "missing_field", "non_numeric", "too_large"):
        assert metric(m, "streamgmm_dead_letters_total", reason=reason) == 1


def test_a_dead_letter_too_big_to_send_keeps_the_part_that_fits(bootstrap, make_topics):
    """A too_large record bigger than the producer's max_request_size (with the defaults,
    every too_large record over 1 MiB) would be refused for ever and hold up every output
    after it: its dead letter keeps the first bytes that fit and the whole size in a
    header, and the stream goes on."""
    src, out, dlq = make_topics("big-in", "big-out", "big-dlq")
    X = mixture_rows(300, seed=5)
    good = [json.dumps(to_record(i, x)).encode() for i, x in enumerate(X)]
    big = json.dumps({**to_record(999, X[0]), "pad": "x" * 60_000}).encode()
    produce(bootstrap, src, good[:150] + [big] + good[150:])
    port = free_port()
    cfg = daemon_config(bootstrap, src, out, dlq, unique("g-big"), warmup=100,
                        metrics_port=port, emit="all", records={"max_bytes": 2048},
                        kafka={"producer": {"max_request_size": 16_384}})
    d = DaemonThread(cfg).start()
    try:
        wait_for(lambda: metric(scrape(port)[1], "streamgmm_records_processed_total")
                 == len(good), 60, what="every good record scored")
    finally:
        assert d.stop() == 0
    [letter] = read_topic(bootstrap, dlq, min_records=1)
    h = {k: v.decode() for k, v in letter.headers}
    assert h[P + "reason"] == "too_large" and h[P + "offset"] == "150"
    assert h[P + "value.truncated"] == str(len(big))
    assert 8_000 < len(letter.value) < 16_384 and big.startswith(letter.value)
    events = read_topic(bootstrap, out, min_records=len(good))
    assert len(events) == len(good)


def test_a_tombstone_is_dead_lettered_as_a_tombstone(bootstrap, make_topics):
    """A record with a key and no value (a compacted topic's delete marker) has nothing to
    score: its dead letter keeps the key and the null value."""
    from kafka_helpers import make_producer

    src, out, dlq = make_topics("ts-in", "ts-out", "ts-dlq")
    X = mixture_rows(200, seed=6)
    produce(bootstrap, src, [json.dumps(to_record(i, x)).encode() for i, x in enumerate(X)])
    producer = make_producer(bootstrap)
    producer.send(src, value=None, key=b"deleted-42").get(timeout=30)
    producer.close()
    port = free_port()
    d = DaemonThread(daemon_config(bootstrap, src, out, dlq, unique("g-ts"), warmup=100,
                                   metrics_port=port)).start()
    try:
        wait_for(lambda: metric(scrape(port)[1], "streamgmm_dead_letters_total",
                                reason="invalid_json") == 1, 60, what="the dead letter")
    finally:
        assert d.stop() == 0
    [letter] = read_topic(bootstrap, dlq, min_records=1)
    assert letter.key == b"deleted-42" and letter.value is None
    assert dict(letter.headers)[P + "reason"] == b"invalid_json"


class _NullValueHeaders(list):
    """Headers with null values (legal in Kafka: Java clients write them), which kafka-python's
    producer refuses: its checks see empty values, its record encoder the nulls."""

    def __iter__(self):
        import sys

        if sys._getframe(1).f_code.co_name in ("_encode_msg", "append", "size_of"):
            return list.__iter__(self)
        return iter([(k, b"" if v is None else v) for k, v in list.__iter__(self)])


def test_outputs_too_big_to_send_are_cut_to_fit_and_the_stream_goes_on(bootstrap, make_topics):
    """Whatever a record holds, its outputs fit one producer request: a dead letter whose key
    or headers alone are over max_request_size, an event whose key (non-ASCII, three times
    longer once JSON-escaped) is, and a record with a null header value (which kafka-python
    cannot send) each used to fail for good on every retry, holding up every output and
    commit after them (a poison pill: the same again after a restart)."""
    from kafka_helpers import make_producer

    src, out, dlq = make_topics("cut-in", "cut-out", "cut-dlq")
    X = mixture_rows(300, seed=7)
    good = [json.dumps(to_record(i, x)).encode() for i, x in enumerate(X)]
    produce(bootstrap, src, good[:150])
    port = free_port()
    cfg = daemon_config(bootstrap, src, out, dlq, unique("g-cut"), warmup=100,
                        metrics_port=port, emit="all", records={"max_bytes": 10_000},
                        kafka={"producer": {"max_request_size": 16_384}})
    d = DaemonThread(cfg).start()
    long_id = "\U0001F600" * 2400  # 9.6 KB of UTF-8, 28.8 KB as a JSON-escaped event key
    p = make_producer(bootstrap, linger_ms=0)
    try:
        wait_for(lambda: metric(scrape(port)[1], "streamgmm_records_processed_total") == 150,
                 60, what="the warm-up")
        p.send(src, b"not json 1", key=b"k" * 20_000).get(30)
        p.send(src, b"not json 2", key=b"hdrs", headers=[("h", b"v" * 20_000)]).get(30)
        p.send(src, b"not json 3", key=b"null",
               headers=_NullValueHeaders([("n", None)])).get(30)
        p.send(src, json.dumps({**to_record(0, X[0]), "id": long_id},
                               ensure_ascii=False).encode(), key=b"long-id").get(30)
        for v in good[150:]:
            p.send(src, v)
        p.flush(30)
        wait_for(lambda: metric(scrape(port)[1], "streamgmm_records_processed_total") == 301,
                 60, what="every good record scored")
        wait_for(lambda: metric(scrape(port)[1], "streamgmm_ready") == 1, 30,
                 what="outputs acknowledged")
    finally:
        p.close()
        assert d.stop() == 0
    dead = read_topic(bootstrap, dlq, min_records=3)
    assert len(dead) == 3
    by_offset = {int(dict(r.headers)[P + "offset"]): r for r in dead}
    big_key, big_hdrs, null_hdr = by_offset[150], by_offset[151], by_offset[152]
    assert big_key.value == b"not json 1"                     # the value kept, the key cut
    assert b"k" * 4000 == big_key.key[:4000] and len(big_key.key) <= 16_384 // 4
    assert dict(big_key.headers)[P + "key.truncated"] == b"20000"
    assert big_hdrs.value == b"not json 2" and big_hdrs.key == b"hdrs"  # its headers dropped
    assert dict(big_hdrs.headers)[P + "headers.dropped"] == b"1"
    assert "h" not in dict(big_hdrs.headers)
    assert null_hdr.value == b"not json 3" and ("n", b"") in null_hdr.headers
    for r in dead:
        assert dict(r.headers)[P + "reason"] == b"invalid_json"
    events = read_topic(bootstrap, out, min_records=301)
    assert len(events) == 301
    [cut] = [json.loads(e.value) for e in events if e.key == b"long-id"]
    assert cut["key_truncated"] is True and cut["offset"] == 153
    assert 1000 < len(cut["key"]) < 2400 and long_id.startswith(cut["key"])


@pytest.mark.parametrize("worker", ["0", "1"], ids=["inline", "decode-worker"])
def test_values_nested_nearly_as_deep_as_json_allows_are_handled_not_fatal(bootstrap,
                                                                            make_topics,
                                                                            worker, monkeypatch):
    """A record whose feature or key is an array nested ~900-1000 deep is decoded (JSON's
    limit is the recursion limit), but writing it out (the dead letter's message, the
    event's key) needs a few more stack frames: the RecursionError used to escape and stop
    the daemon with exit 1, and a restart met the same record again. Every such record now
    has an outcome: a dead letter, or an event whose key is cut below 64 levels. The decode
    worker (forced on, small polls so that batches are full), which cannot pickle such a key
    back, hands that batch to the main process and is kept (it used to be dropped for good)."""
    monkeypatch.setenv("STREAMGMM_DECODE_WORKER", worker)
    src, out, dlq = make_topics("deep-in", "deep-out", "deep-dlq")
    X = mixture_rows(150, seed=9)
    produce(bootstrap, src, [json.dumps(to_record(i, x)).encode() for i, x in enumerate(X)])
    port = free_port()
    cfg = daemon_config(bootstrap, src, out, dlq, unique("g-deep"), warmup=100,
                        metrics_port=port, emit="all",
                        kafka={"max_poll_records": 500 if worker == "0" else 20})
    d = DaemonThread(cfg).start()
    rest = '"latency_ms": 1, "sensor": {"temp": 1, "rpm": 1}'
    deep = []
    for n in range(900, 1000, 2):   # (where encoding fails depends on the stack's depth)
        nested = "[" * n + "]" * n
        deep.append(f'{{"id": "a{n}", "amount": {nested}, {rest}}}'.encode())
        deep.append(f'{{"id": {nested}, "amount": 1, {rest}}}'.encode())
    try:
        wait_for(lambda: metric(scrape(port)[1], "streamgmm_records_processed_total") == 150,
                 60, what="the warm-up")
        produce(bootstrap, src, deep + [json.dumps(to_record(i, x)).encode()
                                        for i, x in enumerate(X[:20], 150)])

        def outcomes():
            m = scrape(port)[1]
            return (metric(m, "streamgmm_records_processed_total") +
                    sum(v for (name, _), v in m.items()
                        if name == "streamgmm_dead_letters_total"))
        wait_for(lambda: not d.alive or outcomes() == 150 + len(deep) + 20, 60,
                 what="an outcome for every record")
        assert d.alive
        assert (d.daemon.worker is not None) == (worker == "1")
    finally:
        assert d.stop() == 0
    import sys

    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(10_000)  # the keys that were written whole: as deep as they came
    try:
        events = [json.loads(e.value) for e in read_topic(bootstrap, out, min_records=170)]
    finally:
        sys.setrecursionlimit(limit)
    letters = read_topic(bootstrap, dlq, min_records=1)
    assert len(events) + len(letters) == 150 + len(deep) + 20
    assert {f"r{i}" for i in range(150, 170)} <= {e["key"] for e in events if
                                                     isinstance(e["key"], str)}
    for e in events:
        if isinstance(e["key"], list):  # a deep key: whole, or cut 64 levels below the event
            depth, k = 0, e["key"]
            while isinstance(k, list) and k:
                depth, k = depth + 1, k[0]
            assert (k, depth) == ("[nested too deeply]", 63) or (k == [] and depth >= 899)
    for r in letters:
        reason = dict(r.headers)[P + "reason"]
        assert reason in (b"non_numeric", b"invalid_json"), reason
