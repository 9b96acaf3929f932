"""The daemon at run time: the poll-score-emit-commit loop, its decode worker, metrics,
health endpoints and logging."""
