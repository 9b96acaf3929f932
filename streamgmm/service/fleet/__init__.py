"""The fleet: daemons of one consumer group sharing one model through Kafka (`fleet.enabled`).

See docs/operations.md ("A fleet of daemons") for roles, topics and failure handling.
"""
