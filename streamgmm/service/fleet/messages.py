"""What members send the leader (one `sync` message per interval) and how versions are
marked: the bytes are the checkpoint container (`persistence.dumps_state`: NPZ arrays plus a
checksummed JSON manifest, no pickle), so a torn or foreign message is refused whole."""
from __future__ import annotations

from ...persistence import CheckpointError, dumps_state, loads_state

VERSION_HEADER = "streamgmm-fleet-version"
MEMBER_HEADER = "streamgmm-fleet-member"
KIND = "streamgmm-fleet-sync"


def encode_sync(meta: dict, arrays: dict) -> bytes:
    return dumps_state(dict(meta, kind=KIND), arrays)


def decode_sync(data: bytes, origin: str):
    """(meta, arrays) of a sync message; CheckpointError when it is not one."""
    meta, arrays = loads_state(data, origin)
    if meta.get("kind") != KIND:
        raise CheckpointError(f"{origin}: not a fleet sync message (kind {meta.get('kind')!r})")
    return meta, arrays


def version_header(version: int) -> list:
    return [(VERSION_HEADER, str(int(version)).encode())]


def member_header(member_id: str) -> list:
    return [(MEMBER_HEADER, member_id.encode())]


def member_of(headers) -> str | None:
    """The member that sent a sync (from its headers), None when unsaid."""
    for k, v in headers or ():
        if k == MEMBER_HEADER:
            return v.decode(errors="replace")
    return None


def version_of(headers) -> int | None:
    """The fleet version a state record carries in its headers (None: not a fleet version)."""
    for k, v in headers or ():
        if k == VERSION_HEADER:
            try:
                return int(v.decode())
            except (ValueError, AttributeError):
                return None
    return None
