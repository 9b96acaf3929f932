"""The vectorised CRC-32C (streamgmm.math.crc32c) against kafka-python's own, and its use in
kafka-python's record batches (streamgmm.service.kafka_crc), on the broker too."""
from __future__ import annotations

import numpy as np
import pytest
from kafka import KafkaConsumer, TopicPartition
from kafka.record import default_records, util
from kafka.record._crc32c import crc as reference_crc
from kafka.record.default_records import DefaultRecordBatch, DefaultRecordBatchBuilder

from kafka_helpers import daemon_config, make_producer, unique
from streamgmm.math.crc32c import crc32c
from streamgmm.service import kafka_crc
from streamgmm.service.config import config_from_dict
from streamgmm.service.daemon import Daemon


@pytest.fixture
def restore_kafka_crc(monkeypatch):
    """Whatever a test installs, kafka-python's CRC function is put back afterwards; the C
    `crc32c` package is hidden, should it be installed."""
    monkeypatch.setattr(default_records, "calc_crc32c", default_records.calc_crc32c)
    monkeypatch.setattr(util, "crc32c_c", None)
    yield


def _random(n: int, seed: int) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes()


def test_known_value():
    assert crc32c(b"123456789") == 0xE3069283  # the CRC-32C check value


def test_matches_kafka_python_for_every_short_length():
    for n in range(4, 260):
        data = _random(n, seed=n)
        assert crc32c(data) == reference_crc(memoryview(data)), n


@pytest.mark.parametrize("n", [2047, 2048, 2049, 4095, 4096, 64 * 33 + 5, 100_003, 524_288,
                               1_048_579])
def test_matches_kafka_python(n):
    data = _random(n, seed=n)
    assert crc32c(data) == reference_crc(memoryview(data))


def test_memoryview_slices_and_bytearrays():
    raw = bytearray(_random(10_000, seed=3))
    for lo, hi in [(0, 10_000), (1, 9_999), (61, 5_000), (3, 2051)]:
        view = memoryview(raw)[lo:hi]
        assert crc32c(view) == reference_crc(bytes(raw[lo:hi]))


def test_all_zero_and_all_ones_buffers():
    for n in (4, 64, 65, 4096, 70_001):
        for fill in (0x00, 0xFF):
            data = bytes([fill]) * n
            assert crc32c(data) == reference_crc(data)


def test_small_buffers_use_the_small_function():
    calls = []

    def small(data):
        calls.append(len(data))
        return reference_crc(data)

    f = kafka_crc.make_crc32c(small)
    for n in (4, 100, kafka_crc.MIN_VECTOR_BYTES - 1, kafka_crc.MIN_VECTOR_BYTES, 50_000):
        data = _random(n, seed=n)
        assert f(memoryview(data)) == reference_crc(data)
    assert calls == [4, 100, kafka_crc.MIN_VECTOR_BYTES - 1]


def _batch(n_records: int = 200) -> bytearray:
    b = DefaultRecordBatchBuilder(magic=2, compression_type=0, is_transactional=False,
                                  producer_id=-1, producer_epoch=-1, base_sequence=-1,
                                  batch_size=1 << 20)
    for i in range(n_records):
        b.append(i, timestamp=1_700_000_000_000 + i, key=None,
                 value=b'{"amount":%d.5,"latency_ms":12.25}' % i, headers=[])
    return b.build()


def test_record_batches_built_and_checked_identically(restore_kafka_crc):
    original = _batch()
    assert len(original) > kafka_crc.MIN_VECTOR_BYTES
    assert kafka_crc.install()
    assert kafka_crc.installed()
    assert kafka_crc.install()  # idempotent
    rebuilt = _batch()
    assert bytes(rebuilt) == bytes(original)  # same header CRC written
    assert DefaultRecordBatch(bytes(original)).validate_crc()
    corrupt = bytearray(original)
    corrupt[len(corrupt) // 2] ^= 0x01
    assert not DefaultRecordBatch(bytes(corrupt)).validate_crc()
    kafka_crc.uninstall()
    assert not kafka_crc.installed()
    assert default_records.calc_crc32c is util.calc_crc32c
    assert not DefaultRecordBatch(bytes(corrupt)).validate_crc()


def test_not_installed_over_the_c_package(restore_kafka_crc, monkeypatch):
    kafka_crc.uninstall()
    monkeypatch.setattr(util, "crc32c_c", reference_crc)  # as if `crc32c` were installed
    assert kafka_crc.install() is False
    assert not kafka_crc.installed()
    assert kafka_crc.describe() == "the C crc32c package"


def test_not_installed_when_it_would_disagree(restore_kafka_crc, monkeypatch):
    kafka_crc.uninstall()
    monkeypatch.setattr(default_records, "calc_crc32c", lambda data: 0)
    assert kafka_crc.install() is False
    assert not kafka_crc.installed()


@pytest.mark.parametrize("compression", [None, "gzip"])
def test_broker_round_trip_both_ways(restore_kafka_crc, bootstrap, make_topics, compression):
    """Batches written with the vectorised CRC pass kafka-python's own check on fetch, and
    the other way round (and through the broker's own validation); compressed too."""
    values = [b'{"id":"r%d","amount":%d.25,"pad":"%s"}' % (i, i, bytes(_random(i % 50, i)).hex()
                                                         .encode()) for i in range(600)]
    for produce_fast, consume_fast in [(True, False), (False, True)]:
        topic = make_topics("crc")
        kafka_crc.configure(produce_fast)
        p = make_producer(bootstrap, linger_ms=50, batch_size=256 * 1024,
                          compression_type=compression)
        for v in values:
            p.send(topic, v)
        p.flush()
        p.close()
        kafka_crc.configure(consume_fast)
        c = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, check_crcs=True,
                          enable_auto_commit=False, fetch_max_wait_ms=50)
        tp = TopicPartition(topic, 0)
        c.assign([tp])
        c.seek_to_beginning(tp)
        got = []
        for _ in range(100):
            for recs in c.poll(timeout_ms=200).values():
                got.extend(r.value for r in recs)
            if len(got) >= len(values):
                break
        c.close()
        assert got == values


@pytest.mark.parametrize("enabled", [True, False])
def test_daemon_follows_the_config_key(restore_kafka_crc, tmp_path, bootstrap, enabled):
    """`kafka.vectorised_crc` decides, whatever state the process was in."""
    kafka_crc.configure(not enabled)
    src = tmp_path / "in.jsonl"
    src.write_text("")
    d = daemon_config(bootstrap, "unused", unique("out"), unique("dlq"), unique("g"),
                      source={"type": "file", "path": str(src)},
                      kafka={"vectorised_crc": enabled})
    daemon = Daemon(config_from_dict(d, environ={}))
    daemon.start()
    try:
        assert kafka_crc.installed() is enabled
    finally:
        daemon.shutdown(clean=True)
