"""The daemon loop: poll a batch, decode, score, emit, flush, commit — at-least-once.

`run(cfg) -> int` is the whole daemon (exit code 0 on a clean stop or end of a file source,
1 on a failure). One iteration: poll → `records.decode_batch` → dead letters → one vectorised
`Detector.process` over the good records → events → flush sinks → commit, per partition, up to
the lowest offset still buffered in the Detector's warm-up (so nothing is committed before its
outcome is handed on); while full batches keep coming (a backlog) the flush and commit happen
every FLUSH_INTERVAL_SECONDS rather than every batch. SIGTERM/SIGINT stop polling; the batch in
hand is finished, flushed and committed, the detector checkpointed, and the process exits
within `shutdown_timeout_seconds`.

Also runnable on its own: `python -m streamgmm.service.runtime.daemon --config FILE`.
"""
from __future__ import annotations

import argparse
import contextlib
import logging
import operator
import os
import signal
import sys
import threading
import time

import numpy as np

from ..kafka_io import (KafkaSink, OutputsPending, ProducerFailed, ProducerLink,
                        RetriableSinkError)
from ..kafka_io.state_store import KafkaStateStore, StateStoreError
from ..messages import EMPTY, OutputClosed, SinkError, SourceError
from . import preflight
from .decode_worker import DecodeWorker, decode_worker_wanted
from .endpoints import make_sink, make_source
from .events import DEAD_LETTER_CLASS, iso_now, key_text, make_event, record_ts_ms
from .health import Health, HealthServer, liveness_timeout
from .metrics import DaemonMetrics
from .pending import Chunk, PendingQueue
from .topic_watch import TopicWatch

log = logging.getLogger("streamgmm.daemon")

LAG_INTERVAL_SECONDS = 1.0
# While full batches keep coming (a backlog), outputs are flushed and offsets committed at
# most this often instead of after every batch: each flush waits a producer round trip (acks
# =all) and each commit is a request; per batch they were ~15% of the daemon's wall time on a
# backlog (BENCHMARKS.md). A batch that is not full (a live stream, the end of a backlog)
# flushes and commits at once, so steady-state latency is unchanged. At-least-once holds
# either way: offsets are committed only after the flush; a crash re-reads at most this much.
FLUSH_INTERVAL_SECONDS = 0.5
SHUTDOWN_RESERVE_SECONDS = 1.0
# The revocation callback runs on kafka-python's event loop (heartbeats wait meanwhile): it
# waits at most this long for the acks of outputs already sent, never for a decode or a fit.
REVOKE_FLUSH_SECONDS = 0.5
CLUSTER_CHECK_SECONDS = 1.0     # how often the consumer's connections are looked at
OUTAGE_AFTER_SECONDS = 3.0      # no connection to any broker for this long: cluster down
FLUSH_SLICE_SECONDS = 1.0       # a flush waits in slices, so a stop request is seen
POLL_SLICE_MS = 1000            # and a poll waits at most this long, for the same reason
FIT_WATCH_SECONDS = 0.2         # a warm-up fit is watched for a stop request this often
FIT_KEEPALIVE_SECONDS = 1.0     # and the consumer polled (partitions paused) this often
FOLLOWER_BUFFER_WARMUPS = 4     # a fleet member waiting for a first version reads at most
#                                 this many warmup_records, then holds its partitions
OUTPUTS_LATE_SECONDS = 10.0     # outputs unacknowledged this long: say so (once)
REBUILD_BACKOFF_MAX_SECONDS = 30.0


_VALUE = operator.attrgetter("value")


class StopRequested(Exception):
    """A stop was requested while the loop waited for Kafka (outputs or the cluster)."""


# ------------------------------------------------------------------------------- the daemon

class Daemon:
    """State of one running daemon; `run()` below drives it."""

    def __init__(self, cfg, stop_event: threading.Event | None = None):
        self.cfg = cfg
        self.stop_event = stop_event or threading.Event()
        self.metrics = DaemonMetrics(cfg.metrics.ratio_window,
                                     cfg.detector.threshold.percentile / 100.0,
                                     checkpoints=not cfg.fleet.enabled and (
                                         bool(cfg.checkpoint.path) or
                                         cfg.checkpoint.store == "kafka"))
        self.health = Health(liveness_timeout(cfg.kafka.poll_timeout_ms))
        health = self.health
        self.metrics.loop_age.set_function(lambda: health.since_beat)
        self.server: HealthServer | None = None
        self.det = None
        self.store: KafkaStateStore | None = None  # checkpoint.store: kafka
        self.fleet = None  # fleet.enabled: the group's shared model (service/fleet)
        self.source = None
        self.sink = None
        self.dlq = None
        self.pending = PendingQueue()
        self._seen: dict = {}        # (topic, partition) -> offset after the last flushed record
        self._committed: dict = {}   # (topic, partition) -> last offset sent in a commit
        self._unflushed: dict | None = None  # next offsets of the batch sent but not flushed
        self._async_commit_failed = False
        self._fit_abandoned = False  # a stop left a warm-up fit running: hands off the detector
        self._holding = False  # a fleet member holds its input until the first version
        self._last_ckpt = time.monotonic()
        self._ckpt_version = None    # model version of the last checkpoint (or the restored one)
        self._last_flush = time.monotonic()
        self._last_lag = 0.0
        self._emit_all = cfg.sink.emit == "all"
        self.group = cfg.kafka.group_id if cfg.source.type == "kafka" else None
        self.exhausted = False
        self.worker: DecodeWorker | None = None
        self._inflight = None  # the batch the decode worker is decoding
        self._closing = False
        self._revoked: set = set()   # partitions revoked or lost in a poll, settled after it
        self._callback_error: BaseException | None = None  # raised in the main loop
        self.stop_deadline: float | None = None  # set by the signal handler
        self.phase = "starting"      # starting | connecting | running | stopping
        self.link: ProducerLink | None = None
        self._cluster_down = False   # the consumer has lost every broker connection
        self._disconnected_since: float | None = None
        self._last_cluster_check = 0.0
        self._outputs_blocked = False  # Kafka outputs not acknowledged (being retried)
        self.topic_watch: TopicWatch | None = None  # input topics deleted / not created yet

    # ----------------------------------------------------------------------------- start-up
    def start(self) -> bool:
        """Metrics server first (probes answer during warm-up), then the start-up checks
        (files, then the Kafka cluster: retried until it answers or
        kafka.connect_timeout_seconds pass), model, sinks, source. False when a stop was
        requested while connecting. A problem raises DaemonError (one line)."""
        cfg = self.cfg
        if cfg.metrics.enabled:
            try:
                self.server = HealthServer(cfg.metrics.host, cfg.metrics.port, self.health,
                                           self.metrics).start()
            except OSError as exc:
                raise DaemonError(f"metrics.port: cannot serve metrics on "
                                  f"{cfg.metrics.host}:{cfg.metrics.port}: "
                                  f"{exc.strerror or exc}") from None
        try:
            preflight.check_files(cfg)
        except preflight.PreflightError as exc:
            raise DaemonError(str(exc)) from None
        for warning in preflight.config_warnings(cfg):
            log.warning(warning)
        if preflight.kafka_needed(cfg) and not self._connect():
            return False
        if cfg.checkpoint.store == "kafka":
            self.store = KafkaStateStore(cfg.kafka, cfg.checkpoint.topic, cfg.kafka.group_id,
                                         cfg.checkpoint.max_bytes,
                                         cfg.checkpoint.include_recent_records)
            try:
                self.store.ensure_topic()
            except StateStoreError as exc:
                raise DaemonError(str(exc)) from None
        if cfg.fleet.enabled:
            self._join_fleet()
        else:
            self.det = load_detector(cfg, self.store)
            self._ckpt_version = self.det.model_version  # saved already (or a model file)
        self.metrics.observe_model(self.det)  # a restored model: unsaved learning from now
        if decode_worker_wanted():
            try:
                self.worker = DecodeWorker(cfg.records)
            except Exception as exc:  # noqa: BLE001 - e.g. an unguarded __main__ under spawn
                log.warning("no decode worker process (%s); decoding in this process", exc)
        where = preflight.servers(cfg)
        if "kafka" in (cfg.sink.type, cfg.dead_letter.type):
            try:
                self.link = ProducerLink(cfg.kafka)
            except Exception as exc:  # noqa: BLE001 - cluster gone since the check, auth...
                raise DaemonError(f"cannot create the Kafka producer for {where}: "
                                  f"{type(exc).__name__}: {exc}") from None
        for key, section in (("sink", cfg.sink), ("dead_letter", cfg.dead_letter)):
            try:
                sink = make_sink(section, cfg.kafka, producer=self.link)
            except OSError as exc:
                raise DaemonError(f"{key}.path: cannot open {section.path}: "
                                  f"{exc.strerror or exc}") from None
            setattr(self, "sink" if key == "sink" else "dlq", sink)
        try:
            if cfg.source.type == "kafka":
                self.source = make_source(cfg, on_revoked=self._on_revoked,
                                          on_assigned=self._on_assigned, on_lost=self._on_lost,
                                          on_commit_error=lambda exc:
                                          self.metrics.commit_failures.inc())
            else:
                self.source = make_source(cfg)
        except OSError as exc:
            raise DaemonError(f"source.path: cannot read {cfg.source.path}: "
                              f"{exc.strerror or exc}") from None
        except Exception as exc:  # noqa: BLE001 - KafkaTimeoutError, auth errors, ...
            if cfg.source.type != "kafka":
                raise
            raise DaemonError(f"cannot create the Kafka consumer for {where}: "
                              f"{type(exc).__name__}: {exc}") from None
        if cfg.source.type == "kafka" and cfg.kafka.topics:
            self.topic_watch = TopicWatch(cfg).start()
        self.phase = "running"
        self._update_ready()
        return True

    def _join_fleet(self) -> None:
        """Follow the group's model: the newest version before any record is scored."""
        from streamgmm import Detector

        from ..config import detector_dict
        from ..fleet.fleet import Fleet, FleetError

        self.fleet = Fleet(self.cfg, self.store, Detector, detector_dict(self.cfg))
        self.det = self.fleet.det
        try:
            self.fleet.start()
        except FleetError as exc:
            raise DaemonError(str(exc)) from None
        except Exception as exc:  # noqa: BLE001 - the cluster went away since the check
            raise DaemonError(f"fleet: cannot start on {preflight.servers(self.cfg)}: "
                              f"{_one_line(exc)}") from None

    def _fleet_tick(self) -> None:
        """Adopt, sync, lead (service/fleet); emit records that waited for a version."""
        self._hand_on(self.fleet.tick(), self.fleet.take_events())
        self.metrics.observe_fleet(self.fleet.snapshot())

    def _connect(self) -> bool:
        """Wait for the Kafka cluster (not ready meanwhile); False when stopped first."""
        cfg = self.cfg
        where = preflight.servers(cfg)
        timeout = cfg.kafka.connect_timeout_seconds
        self.phase = "connecting"
        self._update_ready()
        log.info("connecting to the Kafka cluster at %s", where)

        def on_state(err):
            log.warning("Kafka cluster at %s not reachable (%s); retrying with backoff %s; "
                        "/readyz reports not ready", where, err,
                        "until it answers" if timeout is None else
                        f"for up to {timeout:g}s (kafka.connect_timeout_seconds)")
        try:
            topics = preflight.check_kafka(cfg, timeout, self.stop_event, on_state)
        except preflight.PreflightError as exc:
            raise DaemonError(str(exc)) from None
        if topics is None:
            log.info("stop requested while connecting to Kafka")
            return False
        for warning in preflight.check_topics(cfg, topics):
            log.warning("%s", warning)
        log.info("Kafka cluster at %s reachable", where)
        return True

    # -------------------------------------------------------------------- rebalance callbacks
    def _on_assigned(self, tps) -> None:
        self.metrics.rebalances.inc()
        self._update_ready()

    def _on_revoked(self, tps) -> dict | None:
        """Partitions are about to move. This runs on kafka-python's event loop while the
        main loop waits in `poll()`, so it does only bounded work: wait a moment for the acks
        of outputs already sent, and return the offsets of records whose outcomes are handed
        on (the source commits them before the group rejoins). The batch in the decode
        worker, a warm-up fit and an unbounded flush are left to the main loop
        (`_settle_revoked`, right after the poll); what is not committed here is re-read by
        the partitions' next owner (at-least-once). Returns None when closing (the final
        commit is already done). An error is logged and re-raised in the main loop."""
        if self._closing:
            return None
        t0 = time.perf_counter()
        try:
            if self._unflushed is not None:
                try:
                    self._flush(REVOKE_FLUSH_SECONDS)
                except SinkError as exc:
                    log.warning("outputs not acknowledged at the revocation (%s); committing "
                                "only what was handed on before, the next owner re-reads "
                                "the rest", exc)
            offsets = self._offsets_to_commit(only=set(tps), force=True)
            self._committed.update(offsets)
            return offsets
        except Exception as exc:  # noqa: BLE001 - surfaced by the main loop, not swallowed
            log.error("handling the revocation of %s failed: %s",
                      ", ".join(f"{t}[{p}]" for t, p in sorted(tps)), _one_line(exc))
            log.debug("revocation failure", exc_info=True)
            self._callback_error = exc
            return None
        finally:
            self._revoked.update(tps)
            self._forget(tps)
            self._update_ready()
            log.debug("revocation handled in %.3fs", time.perf_counter() - t0)

    def _on_lost(self, tps) -> None:
        self._revoked.update(tps)
        self._forget(tps)
        self._update_ready()

    def _hold_input(self) -> bool:
        """A fleet member waiting for the group's first version buffers what it reads; past
        FOLLOWER_BUFFER_WARMUPS x warmup_records it stops reading (its partitions paused, it
        stays in the group) until the version comes: memory stays bounded (a version the
        leader cannot publish, e.g. a state over checkpoint.max_bytes, would otherwise grow
        the buffer without end), and nothing is skipped (what is not read is not committed)."""
        det = self.det
        hold = (self.fleet is not None and det is not None and not det.ready
                and self._inflight is None and hasattr(self.source, "keepalive")
                and det.pending >= FOLLOWER_BUFFER_WARMUPS * self.cfg.detector.warmup_records)
        if hold and not self._holding:
            log.warning("fleet: %d records buffered while waiting for the group's first model "
                        "version: reading no more until it comes (if the leader's log says "
                        "the state is too large, raise checkpoint.max_bytes and the state "
                        "topic's max.message.bytes)", det.pending)
        elif self._holding and not hold:
            log.info("fleet: reading the input again")
        self._holding = hold
        return hold

    def _settle_revoked(self) -> None:
        """In the main loop after a poll that revoked partitions: finish the batch in the
        decode worker (scoring, and a warm-up fit if it completes one, happen here, not in the
        client's callback), flush, then forget the revoked partitions' offsets so nothing is
        committed for them (a partition assigned again restarts from its committed offset)."""
        if self._callback_error is not None:
            exc, self._callback_error = self._callback_error, None
            raise DaemonError(f"rebalance callback failed: {type(exc).__name__}: {exc}") \
                from exc
        if not self._revoked:
            return
        self._drain()
        if self._unflushed is not None:
            self._flush_outputs()
        self._forget(self._revoked)
        self._revoked.clear()

    def _forget(self, tps) -> None:
        for tp in tps:
            self._seen.pop(tp, None)
            self._committed.pop(tp, None)

    # ------------------------------------------------------------------------- one iteration
    def step(self) -> None:
        """Poll once; flush and commit what earlier batches handed on; handle batches.

        Outputs are flushed only after the next poll, so that their acks arrive while the
        consumer fetches (no idle round trip per batch), and during a backlog (full batches)
        at most every FLUSH_INTERVAL_SECONDS; offsets are committed right after that flush,
        so nothing is committed before its outcome is acked. A full batch (a backlog) is
        decoded by the worker process, when there is one, while this one handles the
        previous batch.
        """
        cfg = self.cfg
        timeout = min(cfg.kafka.poll_timeout_ms, POLL_SLICE_MS)
        if self._unflushed is not None and self.link is None \
                and getattr(self.source, "group", None) is None:
            timeout = 0  # local input and outputs, no acks to wait for: write the last batch's
        if self._hold_input():
            self.source.keepalive()  # in the group, partitions paused: nothing read
            self.stop_event.wait(timeout / 1000.0)
            batch = EMPTY
        else:
            batch = self.source.poll(timeout, cfg.kafka.max_poll_records)
        self.health.beat()
        self._settle_revoked()
        self._check_cluster()
        if self._unflushed is not None and (
                len(batch.records) < cfg.kafka.max_poll_records
                or time.monotonic() - self._last_flush >= FLUSH_INTERVAL_SECONDS):
            self._flush_outputs()
            self._commit()
        prev, prev_dec = self._inflight, None
        if prev is not None:
            prev_dec = self._worker_result(prev)
            self._inflight = None
        if batch.records and self.worker is not None and \
                len(batch.records) >= cfg.kafka.max_poll_records:
            self.worker.submit(batch.records, getattr(self.source, "csv_header", None))
            self._inflight = batch
        if prev is not None:
            self._accept(prev, *prev_dec)
        if batch.records and self._inflight is not batch:
            t0 = time.perf_counter()
            dec = self._decode(batch.records)
            self._accept(batch, dec, time.perf_counter() - t0)
        if not batch.records and self._inflight is None and self.source.exhausted:
            self.exhausted = True
        if self.fleet is not None:
            self._fleet_tick()
        self.metrics.observe_model(self.det)
        self._update_ready()
        now = time.monotonic()
        if now - self._last_lag >= LAG_INTERVAL_SECONDS:
            self._last_lag = now
            # holding (not fetching): the brokers' end offsets, so the lag shows the input
            self.metrics.set_lag(self.source.lag(refresh=True) if self._holding
                                 else self.source.lag())
        self._maybe_checkpoint()
        self.health.beat()

    def _drain(self) -> None:
        """Finish the batch the decode worker holds (before revocation and shutdown)."""
        if self._inflight is not None:
            batch, self._inflight = self._inflight, None
            self._accept(batch, *self._worker_result(batch))

    def _worker_result(self, batch):
        """The worker's decode of `batch`; if the worker is gone, decode here from now on.
        A batch it could not send back (a record's key nested too deeply to pickle) is
        decoded here, and the worker kept."""
        try:
            return self.worker.result()
        except RuntimeError as exc:
            if isinstance(exc.__cause__, RecursionError):
                log.debug("the decode worker could not return a batch (%s): decoding it "
                          "here", exc)
                t0 = time.perf_counter()
                return self._decode(batch.records), time.perf_counter() - t0
            log.warning("%s; decoding in this process from now on", exc)
            self.worker.close()
            self.worker = None
            t0 = time.perf_counter()
            return self._decode(batch.records), time.perf_counter() - t0

    def _flush_outputs(self) -> None:
        """Flush, waiting for Kafka as long as it takes: outputs not acknowledged are waited
        for in slices, a producer whose sends failed is rebuilt and the outputs sent again,
        with backoff; nothing is committed meanwhile, /readyz is not ready, /healthz stays
        alive, and a stop request ends the wait (StopRequested). One log line when the
        outputs fall behind and one when they are acknowledged again."""
        t0 = time.monotonic()
        backoff = 0.5
        while True:
            try:
                self._flush(FLUSH_SLICE_SECONDS if self.link is not None else None)
                break
            except OutputsPending as exc:
                if not self._outputs_blocked and time.monotonic() - t0 >= OUTPUTS_LATE_SECONDS:
                    self._set_outputs_blocked(f"{exc} (broker slow or down?); waiting, "
                                              "nothing is committed past them")
            except ProducerFailed as exc:
                if not self._outputs_blocked:
                    self._set_outputs_blocked(
                        f"{exc}; rebuilding the producer and sending the "
                        f"{self.link.unacked} unacknowledged outputs again, with backoff")
                self._backoff_alive(backoff)
                backoff = min(backoff * 2, REBUILD_BACKOFF_MAX_SECONDS)
                try:
                    self.link.rebuild()
                except Exception as rexc:  # noqa: BLE001 - retried after the next backoff
                    log.debug("rebuilding the producer failed: %s", rexc)
            self.health.beat()
            if self.stop_event.is_set():
                raise StopRequested()
            now = time.monotonic()  # not polling: the lag from the brokers' end offsets
            if self._outputs_blocked and now - self._last_lag >= LAG_INTERVAL_SECONDS:
                self._last_lag = now
                self.metrics.set_lag(self.source.lag(refresh=True))
        if self._outputs_blocked:
            self._outputs_blocked = False
            self.metrics.learning_paused(False)
            log.info("outputs acknowledged again after %.1fs (producer rebuilt %d times so "
                     "far)", time.monotonic() - t0, self.link.rebuilds if self.link else 0)
            self._update_ready()

    def _backoff_alive(self, seconds: float) -> None:
        """Wait `seconds` before the next producer rebuild, beating the health clock every
        slice: the loop is waiting on purpose, not stuck (a backoff of up to 30 s in one wait
        took the loop age past the liveness timeout, /healthz flapping 503 through an
        outage). A stop request ends the wait (StopRequested)."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            if self.stop_event.wait(min(left, FLUSH_SLICE_SECONDS)):
                raise StopRequested() from None
            self.health.beat()

    def _set_outputs_blocked(self, text: str) -> None:
        self._outputs_blocked = True
        self.metrics.learning_paused(True)  # nothing is scored while the outputs wait
        log.warning("Kafka outputs not acknowledged: %s", text)
        self._update_ready()

    def _check_cluster(self) -> None:
        """One line when the consumer loses every broker connection for a while (the client
        keeps retrying with backoff; not ready meanwhile), one when it has one again."""
        now = time.monotonic()
        if now - self._last_cluster_check < CLUSTER_CHECK_SECONDS:
            return
        self._last_cluster_check = now
        connected = getattr(self.source, "connected", None)
        state = connected() if callable(connected) else None
        if state is None:
            return
        where = preflight.servers(self.cfg)
        if state:
            if self._cluster_down:
                log.info("Kafka cluster at %s reachable again after %.0fs", where,
                         now - (self._disconnected_since or now))
                self._cluster_down = False
                self._update_ready()
            self._disconnected_since = None
            return
        if self._disconnected_since is None:
            self._disconnected_since = now
        elif not self._cluster_down and now - self._disconnected_since >= OUTAGE_AFTER_SECONDS:
            self._cluster_down = True
            log.warning("Kafka cluster at %s unreachable: the client keeps reconnecting with "
                        "backoff; /readyz reports not ready until it is back", where)
            self._update_ready()

    def _flush(self, timeout: float | None = None) -> None:
        """Make every output sent so far durable; then its input offsets may be committed."""
        self.sink.flush(timeout)
        self.dlq.flush(timeout)
        self._last_flush = time.monotonic()
        if self._unflushed is not None:
            self._seen.update(self._unflushed)
            self._unflushed = None

    def _decode(self, recs):
        from ..records import decode_batch, decode_csv_rows

        header = getattr(self.source, "csv_header", None)
        if header is not None:
            return decode_csv_rows(header, [r.row for r in recs], self.cfg.records)
        return decode_batch(list(map(_VALUE, recs)), self.cfg.records)

    def _accept(self, batch, dec, decode_seconds: float) -> None:
        """Dead letters, scoring and outputs (sent, not yet flushed) for one decoded batch."""
        t0 = time.perf_counter()
        self._handle(batch.records, dec)
        if self._unflushed is None:  # (empty for files: flushed all the same)
            self._unflushed = dict(batch.next_offsets)
        else:
            self._unflushed.update(batch.next_offsets)
        self.metrics.batch_duration.observe(decode_seconds + time.perf_counter() - t0)

    def _handle(self, recs, dec) -> None:
        for err in dec.errors:
            i, reason, message = err[0], err[1], err[2]
            size = getattr(recs[i], "line_size", None)
            if size is not None and reason == "too_large":  # a local line cut at max_bytes
                from ..records import too_large_message
                message = too_large_message(size, self.cfg.records.max_bytes,
                                            len(recs[i].value))
            exc_class = getattr(err, "exception_class", None) or DEAD_LETTER_CLASS.get(
                reason, "streamgmm.records.DecodeError")
            self.dlq.send_dead_letter(recs[i], reason, message, exc_class, self.group)
            self.metrics.observe_dead_letter(reason)
        good = dec.good_index
        if len(good) == 0:
            return
        grecs = recs if len(good) == len(recs) else [recs[i] for i in good]
        keys = dec.keys if self.cfg.records.key_field is not None else None
        self.pending.push(Chunk(grecs, keys, record_ts_ms(grecs, dec.timestamps)))
        if not self._hand_on(self._process(dec.X)) and self.det.pending:
            log.debug("warm-up: %d records buffered", self.det.pending)

    def _process(self, X):
        """`Detector.process`; a call that completes the warm-up (a fit, seconds to minutes on
        wide records) runs in a helper thread while this one watches for a stop request, so
        a signal is obeyed at once: the fit is left unfinished (StopRequested), and the
        records in warm-up, never committed, are read again after a restart."""
        det = self.det
        if det.ready or det.link_ is not None or \
                det.pending + len(X) < det.config.warmup_records:
            return det.process(X)
        log.info("warm-up complete: fitting on %d records", det.config.warmup_records)
        box: dict = {}

        def fit():
            try:
                box["result"] = det.process(X)
            except BaseException as exc:  # noqa: BLE001 - re-raised in the loop
                box["error"] = exc
        worker = threading.Thread(target=fit, name="warmup-fit", daemon=True)
        worker.start()
        keepalive = getattr(self.source, "keepalive", None)
        last_keepalive = time.monotonic()
        while worker.is_alive():
            worker.join(FIT_WATCH_SECONDS)
            self.health.beat()  # the loop is busy, not stuck
            if keepalive is not None and worker.is_alive() and \
                    time.monotonic() - last_keepalive >= FIT_KEEPALIVE_SECONDS:
                keepalive()  # no records: stay in the group past max_poll_interval_ms
                last_keepalive = time.monotonic()
            if worker.is_alive() and self.stop_event.is_set():
                self._fit_abandoned = True
                log.warning("stop requested during the warm-up fit: not waiting for it; the "
                            "%d records in warm-up are not committed (read again after a "
                            "restart)", len(self.pending))
                raise StopRequested()
        if "error" in box:
            raise box["error"]
        return box["result"]

    def _hand_on(self, res, more_events=()) -> int:
        """Events to metrics and the log; outputs for the scored records (the oldest pending
        ones, in order). Returns how many records were scored."""
        for ev in (*res.events, *more_events):
            self.metrics.observe_event(ev)
            _log_event(ev)
        if len(res):
            self._emit(res, self.pending.pop(len(res)))
        return len(res)

    def finish_input(self) -> None:
        """End of a finite source during warm-up: fit on the short buffer and score it, so no
        record is left without an outcome (unless there are too few to fit at all)."""
        if self.det.ready or not self.det.pending:
            return
        if not self._hand_on(self.det.finish_warmup()):
            log.warning("end of input with only %d records, fewer than the %d a fit needs: "
                        "they are not scored", self.det.pending, self.det.min_fit_records())

    def _emit(self, res, chunk: Chunk) -> None:
        """Metrics for the scored records and one event per anomaly (or per record)."""
        scores = np.asarray(res.scores, dtype=float)
        flags = np.asarray(res.is_anomaly, dtype=bool)
        ages = time.time() - chunk.ts_ms / 1000.0
        self.metrics.observe_scored(scores, flags, ages)
        idx = range(len(scores)) if self._emit_all else np.flatnonzero(flags)
        if len(idx) == 0:
            return
        version = self.det.model_version
        detected_at = iso_now()
        thr, comp, contrib = res.threshold, res.component, res.contributions
        rarity, severity = res.rarity, res.severity
        keys = chunk.keys
        fleet_version = self.fleet.version if self.fleet is not None else None
        for i in idx:
            rec = chunk.recs[i]
            key = keys[i] if keys is not None else key_text(rec.key)
            event = make_event(rec, key, chunk.ts_ms[i], scores[i], thr[i], flags[i],
                               comp[i], contrib[i], version, detected_at, rarity[i],
                               severity[i])
            if fleet_version is not None:  # the group's version this member scored with
                event["fleet_version"] = fleet_version
            self.sink.send_event(
                event, key=rec.key if isinstance(rec.key, (bytes, bytearray)) else None)

    # ------------------------------------------------------------------ commits, checkpoints
    def _offsets_to_commit(self, only=None, force: bool = False) -> dict:
        """{(topic, partition): offset} safe to commit: after the last flushed record, but not
        past a record still buffered in the Detector's warm-up; owned partitions only."""
        if not self._seen:
            return {}
        assigned = self.source.assignment()
        pend = self.pending.min_offsets() if len(self.pending) else {}
        out = {}
        for tp, nxt in self._seen.items():  # (a file's position: (topic, None), always ours)
            if (tp not in assigned and tp[1] is not None) or (only is not None and
                                                              tp not in only):
                continue
            off = min(nxt, pend.get(tp, nxt))
            if force or off > self._committed.get(tp, -1):
                out[tp] = off
        return out

    def _commit(self, only=None, sync: bool = False, timeout: float | None = None) -> bool:
        """Commit what is safe. In the steady state asynchronously (a failure is counted and
        the next commit re-sends everything); at revocation and shutdown synchronously."""
        if self._async_commit_failed:
            self._async_commit_failed = False
            self._committed.clear()
        offsets = self._offsets_to_commit(only, force=sync)
        if not offsets:
            return True
        if sync:
            ok = self.source.commit(offsets, timeout_ms=None if timeout is None
                                    else int(timeout * 1000))
        else:
            ok = self.source.commit_async(offsets, self._on_async_commit)
        if ok:
            self._committed.update(offsets)
        else:
            self.metrics.commit_failures.inc()
        return ok

    def _on_async_commit(self, offsets, error) -> None:
        """Completion of an asynchronous commit (may run on the client's network thread)."""
        if error is not None:
            self.metrics.commit_failures.inc()
            self._async_commit_failed = True
            log.warning("offset commit failed (%s: %s); will retry with the next batch",
                        type(error).__name__, error)

    def _maybe_checkpoint(self, force: bool = False) -> bool:
        if self.fleet is not None:  # the leader's published versions are the checkpoints
            return True
        path = self.cfg.checkpoint.path
        if self.store is not None:
            path = f"state topic {self.store.topic}"
        if not path or not self.det.ready:
            return True
        # A new model (the warm-up fit, a refit) is saved at once, not at the next period: the
        # records it was fitted on are committed right after this step, and a crash before
        # the next periodic checkpoint would otherwise start a new warm-up on other records
        # (or score on with the model the drift replaced). A failed write retries by period.
        version = self.det.model_version
        if not force and version == self._ckpt_version and \
                time.monotonic() - self._last_ckpt < self.cfg.checkpoint.interval_seconds:
            return True
        self._last_ckpt = time.monotonic()
        self._ckpt_version = version
        try:
            t0 = time.perf_counter()
            recent = self.cfg.checkpoint.include_recent_records
            if self.store is not None:
                offset = self.store.save(self.det.dumps(include_recent_records=recent))
                path = f"{path} (offset {offset})"
            else:
                self.det.save(path, include_recent_records=recent)
        except Exception as exc:  # noqa: BLE001 - a failed checkpoint must not stop scoring
            log.error("checkpoint to %s failed: %s", path, _one_line(exc))
            log.debug("checkpoint failure", exc_info=True)
            return False
        self.metrics.observe_checkpoint()
        log.info("checkpoint written to %s (model version %s, %.3fs)", path,
                 self.det.model_version, time.perf_counter() - t0)
        return True

    def _update_ready(self) -> None:
        det_ready = bool(self.det is not None and self.det.ready)
        src_ready = bool(self.source is not None and self.source.ready)
        kafka_ok = not (self._cluster_down or self._outputs_blocked or
                        self.phase == "connecting")
        # a Kafka consumer the group gave no partition is a ready standby even without a
        # model (nothing to score; it warms up when it gets partitions)
        assigned = len(self.source.assignment()) if self.source is not None else 0
        standby = (src_ready and getattr(self.source, "group", None) is not None and
                   not assigned)
        missing = self.topic_watch.missing if self.topic_watch is not None else ()
        ok = (det_ready or standby) and src_ready and kafka_ok and not missing
        self.metrics.ready.set(1 if ok else 0)
        detail = {"model_ready": det_ready, "in_group": src_ready,
                  "partitions_assigned": assigned}
        if missing:
            detail["missing_topics"] = list(missing)
        if not kafka_ok:
            detail["kafka"] = ("connecting" if self.phase == "connecting" else
                               "unreachable" if self._cluster_down else
                               "outputs not acknowledged")
        self.health.set_ready(ok, **detail)

    # ------------------------------------------------------------------------------ shutdown
    def shutdown(self, clean: bool) -> int:
        """Flush, commit, checkpoint and close within the shutdown timeout (commit only when
        `clean`: after a failure nothing more is committed)."""
        deadline = self.stop_deadline or time.monotonic() + self.cfg.shutdown_timeout_seconds
        deadline -= SHUTDOWN_RESERVE_SECONDS  # keep time for the last closes
        left = lambda: max(0.1, deadline - time.monotonic())  # noqa: E731
        code = 0 if clean else 1
        self.phase = "stopping"
        connected = getattr(self.source, "connected", None)
        kafka_down = (self._cluster_down or self._outputs_blocked or
                      (callable(connected) and connected() is False))  # (an outage's start)
        short = lambda: min(left(), 2.0) if kafka_down else left()  # noqa: E731
        if clean and self.source is not None:
            try:
                if not self._fit_abandoned:  # (a batch in the decode worker: not handled)
                    self._drain()
                self._flush(short())
                self._forget(self._revoked)  # revoked in the last poll: not ours to commit
                self._revoked.clear()
                if self.source.group is not None:
                    if self._cluster_down:
                        log.warning("Kafka cluster unreachable: final offset commit skipped; "
                                    "records since the last commit are re-read after a "
                                    "restart (at-least-once)")
                    elif not self._commit(sync=True, timeout=left()):
                        log.warning("final offset commit failed; those records will be "
                                    "re-read after a restart (at-least-once)")
            except RetriableSinkError as exc:  # Kafka down: a stop is still a clean stop
                log.warning("outputs of the last batches not acknowledged (%s): their "
                            "offsets are not committed; they are re-read after a restart "
                            "(at-least-once)", exc)
            except Exception as exc:  # noqa: BLE001 - SinkError, a dead decode worker, ...
                log.error("finishing the last batch failed, not committing: %s",
                          _one_line(exc))
                log.debug("finishing the last batch failed", exc_info=True)
                code = 1
        if self.det is not None and not self._fit_abandoned:
            if len(self.pending):
                log.warning("%d records still in warm-up at shutdown: not scored, not "
                            "committed", len(self.pending))
            if clean and not self._maybe_checkpoint(force=True):
                code = 1
            try:  # a refit in flight is not waited for: the checkpoint keeps its request
                self.det.close(timeout=min(left(), 0.5))
            except Exception:  # noqa: BLE001
                log.exception("error stopping the detector")
        if self.fleet is not None:
            self.fleet.close(timeout=short())
        if self.store is not None:
            try:
                self.store.close(timeout=short())
            except Exception as exc:  # noqa: BLE001 - e.g. a timeout while the cluster is down
                log.warning("closing the state store's producer: %s", _one_line(exc))
                log.debug("closing the state store's producer", exc_info=True)
        if self.topic_watch is not None:
            self.topic_watch.stop()
        if self.source is not None:
            self._closing = True  # the final commit is done: close() revokes, nothing to add
            self.source.close(timeout_ms=int(short() * 1000))
        for s in (self.sink, self.dlq):
            if s is not None and not isinstance(s, KafkaSink):
                s.close()
        if self.link is not None:
            try:
                self.link.close(timeout=short())
            except Exception as exc:  # noqa: BLE001
                log.warning("closing the producer: %s", _one_line(exc))
                log.debug("closing the producer", exc_info=True)
        if self.worker is not None:
            self.worker.close()
        if self.server is not None:
            self.server.stop()
        return code


def _log_event(ev) -> None:
    kind = getattr(ev, "kind", "?")
    detail = getattr(ev, "detail", {}) or {}
    if kind == "drift":
        log.warning("drift detected by %s: %s", getattr(ev, "detector", None), detail)
    elif kind == "drift_update":
        log.info("drift_update by %s: %s", getattr(ev, "detector", None), detail)
    elif kind == "refit_failed":
        log.error("refit failed: %s", detail)
    else:
        log.info("%s %s", kind, detail)


def load_detector(cfg, store: KafkaStateStore | None = None):
    """Checkpoint if present (the file, or the newest valid record of the state topic with
    `store`), else the pretrained `model.path`, else a fresh (warm-up) one."""
    from streamgmm import Detector

    from ...detection.config import at_next_fit
    from ..config import detector_dict

    features = list(cfg.records.features)
    ck = cfg.checkpoint.path
    restored = _restore(Detector, store) if store is not None else None
    if restored is not None:
        det, origin = restored
    elif ck and os.path.exists(ck):
        origin = f"checkpoint {ck}"
        from ...persistence import PICKLE_KINDS, identify

        kind, what = identify(ck)
        if kind in PICKLE_KINDS:  # never loaded, whatever model.trusted says
            raise DaemonError(f"cannot load {origin}: it is {what}, not a checkpoint the "
                              "daemon writes (.npz); a checkpoint is never loaded from a "
                              "pickle. To start from that file, set it as model.path with "
                              "model.trusted: true and move it away from checkpoint.path")
        det = _load(Detector, origin, ck, trusted=False)
    elif cfg.model.path:
        origin = f"model {cfg.model.path}"
        det = _load(Detector, origin, cfg.model.path, trusted=cfg.model.trusted)
    else:
        det = Detector.from_dict(detector_dict(cfg), feature_names=features)
        log.info("no checkpoint or model: warming up on %d records",
                 cfg.detector.warmup_records)
        return det
    names = getattr(det, "feature_names", None)
    if names is not None and list(names) != features and det.adopt_feature_names(features):
        log.info("%s knows its %d columns by position only (scikit-learn, fitted on an array): "
                 "they are records.features in order", origin, len(features))
        names = features
    if names is not None and list(names) != features:
        det.close()
        raise DaemonError(f"{origin} was trained on features {list(names)}, but "
                          f"records.features is {features} (a model scores its columns in "
                          f"the order it was trained on): {preflight.start_over(cfg, origin)}")
    dtype = getattr(det, "dtype", None)
    log.info("restored %s (model version %s, %s components%s)", origin, det.model_version,
             getattr(det, "n_components", "?"),
             f", {dtype.name}: it scores and refits in {dtype.name}"
             if dtype is not None and dtype != np.float64 else "")
    if cfg.model.path and not origin.startswith("model "):
        _model_path_not_loaded(cfg, origin)
    changes = det.reconfigure(detector_dict(cfg))  # the config file is the one truth
    now = [c for c in changes if not at_next_fit(c[0])]
    later = [c for c in changes if at_next_fit(c[0])]
    if changes:
        def listed(cs):
            return ", ".join(f"detector.{k} {old!r} -> {new!r}" for k, old, new in cs)
        parts = [f"using the config's: {listed(now)}"] if now else []
        if later:
            parts.append("from the next refit on (after a drift; the model in use keeps "
                         "its own until then: to apply them now, fit a model with 'streamgmm "
                         "fit' and start from it, with no checkpoint or state to restore): "
                         + listed(later))
        log.warning("the config's detector settings differ from those saved with the %s; %s",
                    origin.split()[0], "; ".join(parts))
    return det


def _model_path_not_loaded(cfg, origin: str) -> None:
    """model.path is read only when there is no checkpoint: say so, loudly when the model file
    is newer than the checkpoint (a model fitted since, that the operator means to use)."""
    path, ck = cfg.model.path, cfg.checkpoint.path
    if origin.startswith("checkpoint ") and preflight.model_newer_than_checkpoint(cfg):
        log.warning("model.path %s is newer than the checkpoint %s but not loaded: a "
                    "checkpoint is restored before model.path; to start from model.path, "
                    "move the checkpoint away", path, ck)
    else:
        log.info("model.path %s not loaded: the %s is restored instead (what the daemon "
                 "learned since)", path, origin)


def _restore(Detector, store: KafkaStateStore):
    """(Detector, origin) from the state topic's newest valid record, or None."""
    def verify(data):
        return Detector.loads(data, origin=f"state record of {store.topic}")
    try:
        found = store.load(verify)
    except StateStoreError as exc:
        raise DaemonError(f"cannot load the state from {store.topic}: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - the cluster went away since the check, ...
        raise DaemonError(f"cannot read the state topic {store.topic}: "
                          f"{_one_line(exc)}") from None
    if found is None:
        log.info("no state in the state topic %s for group %s", store.topic,
                 store.key.decode(errors="replace"))
        return None
    det, offset = found
    return det, f"state topic {store.topic} (offset {offset})"


def _load(Detector, origin: str, path: str, trusted: bool):
    try:
        return Detector.load(path, trusted=trusted)
    except Exception as exc:  # noqa: BLE001 - refuse with one clear line, never half-load
        raise DaemonError(f"cannot load {origin}: {exc}") from exc


class DaemonError(RuntimeError):
    """A start-up problem to report in one line (exit code 1)."""


def _one_line(exc: BaseException) -> str:
    """`Type: message` on one line (an OSError as `path: reason`)."""
    if isinstance(exc, OSError) and getattr(exc, "filename", None) and exc.strerror:
        return f"{exc.filename}: {exc.strerror}"
    text = " | ".join(p.strip() for p in str(exc).splitlines() if p.strip())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


# ----------------------------------------------------------------------------------- run()

def run(cfg, stop_event: threading.Event | None = None, install_signals: bool | None = None,
        ready_callback=None) -> int:
    """Run the daemon until SIGTERM/SIGINT, `stop_event`, or the end of a file source.

    Returns the exit code. Signal handlers are installed when called from the main thread
    (or `install_signals=True`); the graceful stop then has `shutdown_timeout_seconds` from
    the signal; a second signal, or overrunning that time, exits the process at once (1).
    """
    daemon = Daemon(cfg, stop_event)
    stop = daemon.stop_event
    if install_signals is None:
        install_signals = threading.current_thread() is threading.main_thread()
    previous = {}
    timers: list[threading.Timer] = []  # the shutdown deadline, cancelled when run() returns
    if install_signals:
        def on_signal(signum, frame):
            if stop.is_set():
                log.error("second signal: exiting now")
                os._exit(1)
            if daemon.phase in ("starting", "connecting"):
                log.info("%s received while %s: stopping", signal.Signals(signum).name,
                         "connecting to Kafka" if daemon.phase == "connecting"
                         else "starting")
            else:
                log.info("%s received: finishing the batch in hand, then stopping",
                         signal.Signals(signum).name)
            daemon.stop_deadline = time.monotonic() + cfg.shutdown_timeout_seconds
            stop.set()
            t = threading.Timer(cfg.shutdown_timeout_seconds, _overrun)
            t.daemon = True
            timers.append(t)
            t.start()
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous[sig] = signal.signal(sig, on_signal)

        def on_hangup(signum, frame):  # logrotate's postrotate `kill -HUP`: not a stop
            log.info("SIGHUP received: nothing to reopen or reload (output files renamed "
                     "away are created again at their next write): carrying on")
        previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, on_hangup)
    clean = failed = closed = False
    try:
        try:
            if daemon.start():
                if ready_callback is not None:
                    ready_callback(daemon)
                log.info("daemon started (source %s, sink %s, dead letters %s)",
                         cfg.source.type, cfg.sink.type, cfg.dead_letter.type)
                while not stop.is_set():
                    daemon.step()
                    if daemon.exhausted:
                        log.info("end of input")
                        daemon.finish_input()
                        break
            clean = True
        except KeyboardInterrupt:
            log.info("interrupted")
            clean = True
        except SourceError as exc:  # finish and commit what came before it, then exit 1
            log.error("%s", exc)
            clean = failed = True
        except StopRequested:
            clean = True
        except OutputClosed as exc:  # `| head`: stop quietly; the unwritten batch is not committed
            log.info("%s: stopping, the batch in hand not committed", exc)
            closed = True
        except DaemonError as exc:
            log.error("%s", exc)
        except Exception as exc:  # noqa: BLE001 - one line, commit nothing more, exit 1
            log.error("daemon failed: %s", _one_line(exc))
            log.debug("daemon failure", exc_info=True)
        code = daemon.shutdown(clean) or int(failed)
        if closed:
            code = 0
            with contextlib.suppress(OSError):  # keep the interpreter's last flush quiet
                sys.stdout = open(os.devnull, "w")  # noqa: SIM115
    finally:
        for t in timers:  # a process embedding run() must live on after a clean stop
            t.cancel()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    log.info("stopped (exit code %d)", code)
    return code


def _overrun() -> None:
    log.critical("shutdown did not finish in time: exiting without it")
    logging.shutdown()
    os._exit(1)


# ------------------------------------------------------------------------------------- main

def main(argv=None) -> int:
    """`python -m streamgmm.service.runtime.daemon --config FILE` (same as `streamgmm run`)."""
    from ..config import ConfigError, load_config

    ap = argparse.ArgumentParser(prog="streamgmm-daemon", description=__doc__.splitlines()[0])
    ap.add_argument("--config", "-c", required=True, help="YAML config file")
    args = ap.parse_args(argv)
    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        print(f"streamgmm: config error: {exc}", file=sys.stderr)
        return 2
    setup_logging(cfg)
    return run(cfg)


def setup_logging(cfg) -> None:
    """Logging per cfg.logging (logs.setup_logging when present)."""
    try:
        from .logs import setup_logging as _setup
    except ImportError:
        logging.basicConfig(level=cfg.logging.level,
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        return
    _setup(cfg.logging.level, cfg.logging.format)


if __name__ == "__main__":
    sys.exit(main())
