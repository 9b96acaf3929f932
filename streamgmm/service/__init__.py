"""Layer 4, the service: config/, cli/, runtime/ (the daemon loop, metrics, health, logs),
kafka_io/ and local_io/ (sources and sinks), records.py (decoding) and messages.py (what flows
between them)."""
