"""Refit scheduling: a ring buffer of recent records, a cool-down, and a background worker.

On a drift alarm the scheduler waits until ``min_records`` records have arrived since the
estimated change start (so the new model learns the new regime, not the old one), then fits on
up to ``window`` of the most recent records in a worker thread. A later alarm before the fit
starts moves the change start (a second change: train on the newest regime). The caller keeps
scoring with the old model and swaps the result in at its next policy step; once
``max_pending_records`` records were scored while the worker runs, the caller waits for it (a
fast replay cannot starve it). After a swap no refit starts for ``cooldown_records`` records
(0 by default: the new drift tests' reference period already spaces refits out).
"""
import threading
import time
from dataclasses import dataclass

import numpy as np


class RecordRing:
    """Fixed-size ring of the most recent raw records (bounded memory)."""

    def __init__(self, capacity, n_features):
        self.buf = np.empty((capacity, n_features), dtype=np.float64)
        self.pos = 0
        self.filled = 0

    def push(self, X):
        cap = len(self.buf)
        X = X[-cap:]
        end = self.pos + len(X)
        if end <= cap:
            self.buf[self.pos:end] = X
        else:
            cut = cap - self.pos
            self.buf[self.pos:] = X[:cut]
            self.buf[: end - cap] = X[cut:]
        self.pos = end % cap
        self.filled = min(cap, self.filled + len(X))

    def last(self, n):
        """The ``n`` most recent records, oldest first (a copy)."""
        n = min(n, self.filled)
        idx = (self.pos - n + np.arange(n)) % len(self.buf)
        return self.buf[idx]

    def resized(self, capacity):
        """A ring of another capacity holding the most recent records of this one."""
        ring = RecordRing(capacity, self.buf.shape[1])
        if self.filled:
            ring.push(self.last(capacity))
        return ring


@dataclass
class RefitJob:
    """A refit running (or finished) in the worker thread."""

    thread: threading.Thread
    started_at: float
    n_records: int
    reason: str
    started_record: int = 0
    result: object = None
    error: BaseException = None

    @property
    def done(self):
        return not self.thread.is_alive()


class RefitScheduler:
    """Decides when to refit and runs ``fit_fn(X)`` off the hot path."""

    def __init__(self, cfg, n_features, fit_fn, background=True):
        self.cfg = cfg
        self.fit_fn = fit_fn
        self.background = background
        self.ring = RecordRing(cfg.window, n_features)
        self.n_seen = 0
        self.requested = False
        self.reason = ""
        self.change_start = 0
        self.cooldown_until = 0
        self.job = None

    def observe(self, X_raw):
        """Remember a batch of raw records."""
        self.ring.push(X_raw)
        self.n_seen += len(X_raw)

    def request(self, change_start, reason):
        """Ask for a refit on data from ``change_start`` (a record count) on."""
        if self.job is None:
            self.requested, self.reason = True, reason
            self.change_start = max(int(change_start), self.n_seen - self.ring.filled)

    @property
    def busy(self):
        """A refit is requested or running: drift tests pause meanwhile."""
        return self.requested or self.job is not None

    def maybe_start(self):
        """Start the worker when enough post-change records exist and the cool-down is over."""
        if not self.requested or self.job is not None or self.n_seen < self.cooldown_until:
            return None
        n_new = self.n_seen - self.change_start
        if n_new < min(self.cfg.min_records, self.cfg.window):
            return None
        X = self.ring.last(min(n_new, self.cfg.window))
        job = RefitJob(thread=None, started_at=time.perf_counter(), n_records=len(X),
                       reason=self.reason, started_record=self.n_seen)

        def work():
            try:
                job.result = self.fit_fn(X)
            except BaseException as exc:  # reported to the caller as refit_failed
                job.error = exc

        job.thread = threading.Thread(target=work, name="streamgmm-refit", daemon=True)
        self.requested, self.job = False, job
        if self.background:
            job.thread.start()
        else:
            job.thread.run()
            job.thread = _FinishedThread()
        return job

    def take_finished(self):
        """The finished job, if any (then the cool-down starts), else None."""
        if self.job is None or not self.job.done:
            return None
        job, self.job = self.job, None
        self.cooldown_until = self.n_seen + self.cfg.cooldown_records
        return job

    def wait(self, timeout=None):
        """Block until a running refit ends; True when none is running any more."""
        if self.job is not None and self.background and self.job.thread.is_alive():
            self.job.thread.join(timeout)
        return self.job is None or self.job.done


class _FinishedThread:
    """Stand-in for a thread that already ran (synchronous mode)."""

    def is_alive(self):
        return False

    def join(self, timeout=None):
        return None
