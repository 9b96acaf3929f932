"""Topics the daemon creates for itself: one partition, a cleanup policy, the cluster's
replication factor (the state topic, the fleet's coordination topic)."""
from __future__ import annotations

import logging

log = logging.getLogger("streamgmm.topics")


def ensure_topic(kcfg, topic: str, policy: str, client_id: str, what: str = "topic",
                 on_existing=None) -> bool:
    """Create `topic` if missing (1 partition, `cleanup.policy=policy`); True when created
    here (another member creating it first counts as existing); `what` names it in the log. `on_existing(admin)` runs
    when it already exists (e.g. to check its policy). Errors propagate to the caller, which
    names its config key."""
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic
    from kafka.errors import TopicAlreadyExistsError

    admin = KafkaAdminClient(bootstrap_servers=list(kcfg.bootstrap_servers),
                             client_id=client_id, **dict(kcfg.security or {}))
    try:
        if topic in set(admin.list_topics()):
            if on_existing is not None:
                on_existing(admin)
            return False
        try:
            admin.create_topics([NewTopic(topic, 1, -1,
                                          topic_configs={"cleanup.policy": policy})])
        except TopicAlreadyExistsError:
            return False
        admin.wait_for_topics([topic], timeout_ms=10000)
        log.info("created the %s %s (1 partition, cleanup.policy=%s)", what, topic, policy)
        return True
    finally:
        admin.close()
