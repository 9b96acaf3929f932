"""The leader's model versions to the state topic, off the daemon's loop.

Writing a version waits for Kafka: for the producer (built at the first version, which asks
the cluster for its version), for the topic's metadata and for the acks=all acknowledgement.
During a broker outage each of these waits until its timeout, and the loop that scores
records must not wait with them. So a version is handed to a thread that writes it
(`KafkaStateStore.save`) while the loop goes on; the loop looks at the outcome at its next
tick (`take`). One version is in flight at a time: a newer state is published once the one
in flight has landed or failed, so an outage queues no pile of versions in the producer.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from .messages import version_header

# How long the writing thread waits for one version's acknowledgement; a version not
# acknowledged by then counts as failed (the next one carries the newer state anyway).
ACK_TIMEOUT_SECONDS = 30.0


@dataclass
class Publish:
    """One version handed to the publisher, and its outcome once known."""

    version: int
    size: int
    tag: dict = field(default_factory=dict)   # what the caller needs when it lands
    started: float = 0.0                      # time.monotonic() at submit
    error: BaseException | None = None


class VersionPublisher:
    """`submit(version, data)` writes a version in a thread; `take()` returns its outcome
    (a `Publish`, `error` None when acknowledged) once, after it is known; `in_flight` is
    the version being written, or None."""

    def __init__(self, store, ack_timeout: float = ACK_TIMEOUT_SECONDS):
        self.store = store
        self.ack_timeout = ack_timeout
        self._lock = threading.Lock()
        self._flight: tuple | None = None   # (Publish, thread) until taken
        self._done: Publish | None = None

    @property
    def in_flight(self) -> Publish | None:
        return self._flight[0] if self._flight is not None else None

    def submit(self, version: int, data: bytes, **tag) -> None:
        """Start writing `data` as `version`. A state over `checkpoint.max_bytes` raises
        StateTooLarge here (nothing is sent). Only when nothing is in flight."""
        if self._flight is not None:
            raise RuntimeError(f"version {self._flight[0].version} is still in flight")
        self.store.check_size(data)
        job = Publish(int(version), len(data), tag, time.monotonic())
        t = threading.Thread(target=self._write, args=(job, data),
                             name="streamgmm-fleet-publish", daemon=True)
        self._flight = (job, t)
        t.start()

    def _write(self, job: Publish, data: bytes) -> None:
        try:
            self.store.save(data, headers=version_header(job.version), timeout=self.ack_timeout)
        except BaseException as exc:  # noqa: BLE001 - the loop reports it
            job.error = exc
        with self._lock:
            self._done = job

    def take(self) -> Publish | None:
        """The outcome of the version in flight, once it is known (then nothing is)."""
        with self._lock:
            done, self._done = self._done, None
        if done is not None:
            self._flight = None
        return done

    def wait(self, timeout: float) -> Publish | None:
        """Wait at most `timeout` seconds for the version in flight: `take()`."""
        if self._flight is not None:
            self._flight[1].join(max(0.0, timeout))
        return self.take()
