"""Layer 4: Kafka, files, decoding, daemon loop, checkpoints, metrics, config, CLI."""
