"""Watches that the input topics named in `kafka.topics` exist on the cluster.

A consumer whose topic was deleted goes quiet: kafka-python drops the partitions (or, on
some brokers, keeps fetching nothing) and nothing says why the daemon scores no records. A
background thread asks the cluster for its topic names every `TOPIC_CHECK_SECONDS` with its
own short-lived admin client (never the consumer's, whose metadata calls block without a
bound); the daemon reports not ready while a topic is missing, and one line says so.
"""
from __future__ import annotations

import logging
import threading

from . import preflight

log = logging.getLogger("streamgmm.daemon")

#: how often the cluster's topic names are read
TOPIC_CHECK_SECONDS = 30.0
#: bound on one metadata round trip (a cluster that does not answer is the outage check's)
PROBE_TIMEOUT_SECONDS = 5.0


class TopicWatch:
    """`missing`: the configured input topics the cluster did not list at the last answer."""

    def __init__(self, cfg, interval: float | None = None):
        self.cfg = cfg
        self.topics = tuple(cfg.kafka.topics or ())
        self.interval = TOPIC_CHECK_SECONDS if interval is None else float(interval)
        self.missing: tuple = ()
        self._halt = threading.Event()
        self._thread = threading.Thread(target=self._main, name="topic-watch", daemon=True)

    def start(self) -> "TopicWatch":
        if self.topics:
            self._thread.start()
        return self

    def stop(self) -> None:
        self._halt.set()

    def _main(self) -> None:
        while not self._halt.is_set():
            try:
                self._observe(preflight.list_topics(self.cfg, PROBE_TIMEOUT_SECONDS))
            except Exception:  # noqa: BLE001 - unreachable: the outage check reports that
                pass
            self._halt.wait(self.interval)

    def _observe(self, names: set) -> None:
        missing = tuple(t for t in self.topics if t not in names)
        if missing != self.missing:
            where = preflight.servers(self.cfg)
            if missing:
                log.warning("kafka.topics: %s do(es) not exist on %s (deleted, or not created "
                            "yet): nothing is read from it; /readyz reports not ready until "
                            "it exists", ", ".join(repr(t) for t in missing), where)
            else:
                log.info("kafka.topics: every input topic exists on %s again", where)
        self.missing = missing
