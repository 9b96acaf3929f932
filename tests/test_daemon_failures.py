"""Failures on the way in and out, through the real broker and a real daemon process:

- a sink that starts failing: the daemon stops without committing any offset whose outcome
  was not written, and a restart (sink healthy again) delivers every record;
- a corrupted record batch (bad CRC) on the input topic: one clear line naming topic,
  partition and offset, exit 1, everything before it committed and nothing at or after it.
"""
from __future__ import annotations

import json
import resource
import signal
import subprocess
import sys
import textwrap
import threading

import pytest
from kafka import TopicPartition

from kafka_helpers import (
    BackgroundProducer, DaemonProcess, committed_offsets, daemon_config, mixture_rows,
    produce, read_topic, to_record, unique, wait_for, write_yaml,
)

pytestmark = pytest.mark.timeout(240)


def _produce_with_bad_crc(bootstrap: str, topic: str, value: bytes) -> int:
    """Send one record batch whose CRC is wrong (the test broker stores it as sent); returns
    its offset. A separate process: the CRC function is replaced there only."""
    script = textwrap.dedent(f"""
        import kafka.record.default_records as dr
        dr.calc_crc32c = lambda data: 0xDEADBEEF     # every batch this process writes
        from kafka import KafkaProducer
        p = KafkaProducer(bootstrap_servers={bootstrap!r}, acks="all", linger_ms=0)
        print(p.send({topic!r}, {value!r}, partition=0).get(30).offset)
        p.close(5)
    """)
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    return int(r.stdout.strip().splitlines()[-1])


def _run_to_its_exit_1(cfg: dict, tmp_path) -> str:
    """Run the daemon until it stops by itself (it must exit 1): its log."""
    d = DaemonProcess(write_yaml(tmp_path / "c.yaml", cfg), str(tmp_path / "d.log"),
                      module="streamgmm", args=("run",))
    try:
        code = d.wait(90)
    finally:
        d.kill()
    log = d.log_text()
    assert code == 1, log
    return log


def test_corrupt_record_batch_stops_with_one_clear_line_and_commits_before_it(
        bootstrap, make_topics, tmp_path):
    src, out, dlq = make_topics("crc-in", "crc-out", "crc-dlq")
    group = unique("g-crc")
    X = mixture_rows(350, seed=71)
    values = [json.dumps(to_record(i, x)) for i, x in enumerate(X)]
    produce(bootstrap, src, values[:300], one_per_batch=True, partition=0)
    bad = _produce_with_bad_crc(bootstrap, src, values[300].encode())
    assert bad == 300
    produce(bootstrap, src, values[301:], one_per_batch=True, partition=0)

    log = _run_to_its_exit_1(daemon_config(bootstrap, src, out, dlq, group, warmup=100,
                                           emit="all"), tmp_path)
    lines = [ln for ln in log.splitlines() if "corrupt record batch" in ln]
    assert len(lines) == 1, log
    assert f"topic {src} partition 0 offset 300" in lines[0] and "CRC" in lines[0], lines[0]
    assert "Traceback" not in log, log
    # everything before the bad batch was handed on and committed; nothing at or after it
    assert committed_offsets(bootstrap, group) == {TopicPartition(src, 0): 300}
    offsets = sorted(json.loads(e.value)["offset"] for e in read_topic(bootstrap, out,
                                                                       min_records=300))
    assert offsets == list(range(300))


class _RawHeaderKey(str):
    """A header key whose bytes are not UTF-8 (a client other than kafka-python may write
    one; the broker does not check): kafka-python encodes it as these bytes."""

    def encode(self, *args, **kwargs):
        return b"\xff\xfe-key"


def test_a_record_kafka_python_cannot_parse_is_named_by_partition_and_offset(
        bootstrap, make_topics, tmp_path):
    """kafka-python cannot read a header key that is not UTF-8 and, unlike a CRC failure,
    does not say where the record is: the one line used to say "an unknown position" and
    repeat the error; it names the partitions' positions (the record is at one of them) and
    the cause, so that the documented --reset-offsets can be applied."""
    from kafka_helpers import make_producer

    src, out, dlq = make_topics("hk-in", "hk-out", "hk-dlq")
    group = unique("g-hk")
    X = mixture_rows(150, seed=72)
    produce(bootstrap, src, [json.dumps(to_record(i, x)) for i, x in enumerate(X)],
            one_per_batch=True, partition=0)
    p = make_producer(bootstrap, linger_ms=0)
    p.send(src, json.dumps(to_record(150, X[0])).encode(), partition=0,
           headers=[(_RawHeaderKey("x"), b"v")]).get(30)
    p.close()
    log = _run_to_its_exit_1(daemon_config(bootstrap, src, out, dlq, group, warmup=100),
                             tmp_path)
    [line] = [ln for ln in log.splitlines() if "corrupt record batch" in ln]
    assert f"topic {src} partition 0 from offset 150" in line, line
    assert "header key that is not UTF-8" in line and line.count("UnicodeDecodeError") == 1
    assert "Traceback" not in log, log
    assert committed_offsets(bootstrap, group) == {TopicPartition(src, 0): 150}


def _limit_file_size(limit: int):
    def apply():  # in the child: writes past `limit` bytes fail with EFBIG (SIGXFSZ ignored)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


def _offsets_in(path) -> tuple[list, list]:
    """Offsets of the parseable lines of a JSON-lines sink, and the torn lines."""
    offsets, torn = [], []
    with open(path, "rb") as f:
        for line in f:
            try:
                offsets.append(json.loads(line)["offset"])
            except ValueError:
                torn.append(line)
    return offsets, torn


def test_failing_sink_commits_nothing_unwritten_then_a_restart_delivers_everything(
        bootstrap, make_topics, tmp_path):
    """The file sink's writes start failing (the process may not write past 60 kB: EFBIG, as
    on a full disk). The daemon stops with exit 1; the committed offset never passes an
    outcome not in the file. Restarted with a healthy sink, it delivers every record."""
    src, dlq = make_topics("sinkfail-in", "sinkfail-dlq")
    group = unique("g-sinkfail")
    n = 900
    records = [to_record(i, x) for i, x in enumerate(mixture_rows(n, seed=73))]
    sink = tmp_path / "out" / "scored.jsonl"
    cfg = daemon_config(bootstrap, src, "unused", dlq, group, warmup=100, emit="all")
    cfg["sink"] = {"type": "file", "path": str(sink), "emit": "all"}
    path = write_yaml(tmp_path / "c.yaml", cfg)
    cmd = [sys.executable, "-m", "streamgmm", "run", "--config", path]

    first = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             preexec_fn=_limit_file_size(60_000))
    out1, assigned = [], threading.Event()

    def read():
        for line in first.stdout:
            out1.append(line.decode(errors="replace"))
            if "partitions assigned" in out1[-1]:
                assigned.set()
    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert assigned.wait(60), "".join(out1)
        # a steady stream (one record per producer batch: the restart resumes from a
        # committed offset), so several batches are written and committed before the failure
        prod = BackgroundProducer(bootstrap, src, records, rate=300).start()
        try:
            code1 = first.wait(90)
        except subprocess.TimeoutExpired:
            pytest.fail("the daemon did not stop after its sink failed:\n"
                        + "".join(out1)[-6000:])
    finally:
        if first.poll() is None:
            first.kill()
            first.wait(10)
    reader.join(10)
    log1 = "".join(out1)
    assert code1 == 1, log1
    assert str(sink) in log1 and "File too large" in log1, log1
    assert prod.sent < n, "the stream was over before the sink failed"
    written, torn = _offsets_in(sink)
    committed = committed_offsets(bootstrap, group).get(TopicPartition(src, 0), 0)
    assert 0 < committed < n and len(torn) <= 1, (committed, torn)  # a write cut short
    # never committed past an outcome that is not in the file
    assert set(range(committed)) <= set(written), (committed, sorted(written)[-5:])
    assert max(written) + 1 >= committed

    prod.join()
    second = DaemonProcess(path, str(tmp_path / "second.log"), module="streamgmm",
                           args=("run",))
    try:
        wait_for(lambda: set(_offsets_in(sink)[0]) >= set(range(n)), 90, interval=0.5,
                 what="every record's outcome in the file")
        wait_for(lambda: committed_offsets(bootstrap, group).get(TopicPartition(src, 0)) == n,
                 30, what="everything committed")
        second.proc.send_signal(signal.SIGTERM)
        assert second.wait(20) == 0, second.log_text()
    finally:
        second.kill()
    written, torn_after = _offsets_in(sink)
    assert set(written) == set(range(n))
    # the restart began a new line: the torn fragment got nothing glued to it
    assert [t.rstrip(b"\n") for t in torn_after] == [t.rstrip(b"\n") for t in torn]
