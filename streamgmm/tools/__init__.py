"""Tools around the daemon, not part of its runtime: the synthetic scenario generator
(demos, the compose stack, tests)."""
