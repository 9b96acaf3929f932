"""What a fleet member reports to metrics each loop (plain values, no Kafka objects)."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class FleetStatus:
    """One member's fleet state; counters are totals since start (metrics turns them into
    increments)."""

    group: str
    version: int = 0            # fleet version this member scores with (0: none yet)
    leader: bool = False        # this member owns the coordination partition
    sync_age: float = 0.0       # seconds since it last had the newest published version
    published: int = 0          # statistics messages sent
    merged: int = 0             # members' statistics messages merged as leader
    bytes: dict = field(default_factory=dict)  # (topic kind, "sent"|"received") -> bytes
    members: int = 0            # leader only: members heard from recently
