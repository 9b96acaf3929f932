"""The daemon's Kafka I/O: the consumer-group source and the producer-backed sinks."""
from .consumer import KafkaSource
from .producer import (KafkaSink, OutputsPending, ProducerFailed, ProducerLink, RetriableSinkError,
                       make_producer)

__all__ = ["KafkaSource", "KafkaSink", "OutputsPending", "ProducerFailed", "ProducerLink",
           "RetriableSinkError", "make_producer"]
