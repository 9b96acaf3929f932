"""Build the source and sinks a config asks for (Kafka, file, stdin, stdout)."""
from __future__ import annotations

from ..kafka_io import KafkaSink, KafkaSource
from ..local_io import FileSource, JsonLinesSink, StdinSource


def position_path(cfg) -> str | None:
    """Where a file source stores its read position (`source.resume`), or None."""
    if cfg.source.type == "file" and cfg.source.resume and cfg.checkpoint.path:
        return cfg.checkpoint.path + ".position"
    return None


def make_source(cfg, **callbacks):
    """The source the config asks for (`cfg.source.type`: kafka | file | stdin)."""
    kind = cfg.source.type
    if kind == "kafka":
        return KafkaSource(cfg.kafka, **callbacks)
    if kind == "file":
        return FileSource(cfg.source.path, cfg.source.format, cfg.source.follow,
                          max_bytes=cfg.records.max_bytes,
                          position_path=position_path(cfg))
    if kind == "stdin":
        return StdinSource(cfg.source.format, max_bytes=cfg.records.max_bytes)
    raise ValueError(f"source.type: unknown source {kind!r}")


def make_sink(section, kcfg, producer=None):
    """The sink for `sink` or `dead_letter` config sections (type kafka | file | stdout)."""
    if section.type == "kafka":
        return KafkaSink(kcfg, section.topic, producer=producer)
    if section.type == "file":
        return JsonLinesSink(section.path)
    if section.type == "stdout":
        return JsonLinesSink(None)
    raise ValueError(f"unknown sink type {section.type!r}")
