"""Local sources default to local outputs.

A file or stdin source is what a newcomer runs without Kafka: when the config does not say
where events or dead letters go (no ``sink.type`` / ``dead_letter.type``), they go to stdout as
JSON lines (as in the demo), instead of to the Kafka default ``localhost:9092``, which a machine
without Kafka cannot reach. A Kafka source keeps the Kafka defaults.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping

LOCAL_SOURCES = ("file", "stdin")
LOCAL_DEFAULT_SINK = "stdout"


def _type_given(raw: Mapping, section: str) -> bool:
    sec = raw.get(section)
    return isinstance(sec, Mapping) and sec.get("type") is not None


def apply_local_defaults(cfg: Any, raw: Mapping) -> Any:
    """``cfg`` with ``sink.type`` / ``dead_letter.type`` set to stdout when the source is local
    and the raw config (file plus environment overrides) leaves them unset."""
    if cfg.source.type not in LOCAL_SOURCES:
        return cfg
    changes = {}
    for name in ("sink", "dead_letter"):
        if not _type_given(raw, name):
            changes[name] = dataclasses.replace(getattr(cfg, name), type=LOCAL_DEFAULT_SINK)
    return dataclasses.replace(cfg, **changes) if changes else cfg
