"""Checkpoint files: the Detector's state as NPZ arrays plus a JSON manifest, no pickle.

Layout: one ``.npz`` (zip) file holding every state array and ``__manifest__``, the JSON
metadata encoded as uint8. The manifest records the format name and version, the library
version, and a SHA-256 over every array's name, dtype, shape and bytes, so a truncated,
corrupted, foreign or newer-version file is refused with a clear error instead of being
half-loaded. Writes are atomic: temp file in the same directory, fsync, rename, fsync dir.
Pickle-based joblib files (they can run code when loaded) need ``trusted=True``.
"""
import errno
import hashlib
import io
import json
import os
import stat
import tempfile
import time
import zipfile

import numpy as np

from .._version import __version__

FORMAT_NAME = "streamgmm-detector"
FORMAT_VERSION = 1
MANIFEST_KEY = "__manifest__"


class CheckpointError(ValueError):
    """A checkpoint or model file that cannot be used (the message says why)."""


def _digest(arrays):
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(name.encode())
        h.update(str(a.dtype.str).encode())
        h.update(repr(a.shape).encode())
        h.update(a.tobytes())
    return h.hexdigest()


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, float) and not np.isfinite(obj):
        return {"__float__": repr(obj)}
    return obj


def _unjson(obj):
    if isinstance(obj, dict):
        if set(obj) == {"__float__"}:
            return float(obj["__float__"])
        return {k: _unjson(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_unjson(v) for v in obj]
    return obj


def atomic_write_bytes(path, data):
    """Write ``data`` to ``path`` atomically (temp file, fsync, rename, fsync directory).

    The file gets the mode a plain ``open(path, "w")`` would give it: an existing file's
    mode, else 0666 less the umask (a temp file alone would be 0600: unreadable by the
    daemon's user when another user wrote the model). An error names ``path``, not the
    temp file."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    tmp = None
    try:
        os.makedirs(directory, exist_ok=True)
        if os.path.isdir(path):
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), path)
        try:
            mode = stat.S_IMODE(os.stat(path).st_mode)
        except FileNotFoundError:
            mode = 0o666 & ~_umask()
        fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(path), suffix=TEMP_SUFFIX,
                                   dir=directory)
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), mode)
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        tmp = None
        if os.path.abspath(path) not in _swept:
            _remove_stale_temps(path)
    except BaseException as exc:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
        _remove_stale_temps(path)  # (a full disk: what crashes left may be what fills it)
        if isinstance(exc, OSError) and exc.filename != path:
            raise type(exc)(exc.errno, exc.strerror, path) from None
        raise
    try:
        dfd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:  # some filesystems cannot fsync a directory
        pass


# Temp files of atomic writes: `.<name>.<random>.tmp` beside the target. A process killed
# between creating one and renaming it (kill -9, OOM, power loss) leaves it behind; a
# process's first successful write of a target, and every failed one, removes those older
# than STALE_TEMP_SECONDS (a younger one may be another process's write in progress), so
# crashes do not fill the volume.
TEMP_SUFFIX = ".tmp"
STALE_TEMP_SECONDS = 60.0
_LEGACY_TEMP = (".tmp-", ".ckpt")  # the names before: not tied to a target

# The targets (absolute paths) whose stale temps this process has removed: the directory is
# listed once per target, not at every write (a file source writes its position at every
# commit). Module-level because the fact is per process (stale temps are what a crash of an
# earlier process left; this one's failed writes remove theirs where they fail) and shared
# by every writer of a target; held by the callers, it would have to be passed down through
# Detector.save and write_state. It grows by one entry per distinct target.
_swept: set[str] = set()


def _temp_prefix(path) -> str:
    return f".{os.path.basename(path)}."


def _remove_stale_temps(path) -> None:
    """Remove the stale temps of `path` (and the legacy ones beside it); note it as swept."""
    directory = os.path.dirname(os.path.abspath(path))
    prefix = _temp_prefix(path)
    try:
        names = os.listdir(directory)
    except OSError:
        return
    _swept.add(os.path.abspath(path))
    now = time.time()
    for name in names:
        ours = (name.startswith(prefix) and name.endswith(TEMP_SUFFIX) and
                "." not in name[len(prefix):-len(TEMP_SUFFIX)])  # not `.<name>.position...`
        if not (ours or (name.startswith(_LEGACY_TEMP[0]) and
                         name.endswith(_LEGACY_TEMP[1]))):
            continue
        full = os.path.join(directory, name)
        try:
            if now - os.stat(full).st_mtime >= STALE_TEMP_SECONDS:
                os.unlink(full)
        except OSError:  # gone meanwhile, or not ours to remove
            pass


def _umask() -> int:
    """The process's umask, read without changing it (Linux), else by setting it back."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def dumps_state(meta, arrays):
    """(meta, arrays) as checkpoint bytes: the NPZ with its checksummed manifest (what
    ``save_state`` writes to a file and the Kafka state store writes as one record)."""
    arrays = {k: np.asarray(v) for k, v in arrays.items()}
    for name, a in arrays.items():
        if a.dtype == object:
            raise CheckpointError(f"state array {name!r} has dtype object; refusing to pickle")
    manifest = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION,
                "library_version": __version__, "sha256": _digest(arrays),
                "arrays": sorted(arrays), "meta": _jsonable(meta)}
    payload = dict(arrays)
    payload[MANIFEST_KEY] = np.frombuffer(json.dumps(manifest).encode(), dtype=np.uint8)
    buf = io.BytesIO()
    np.savez(buf, **payload)
    return buf.getvalue()


def save_state(path, meta, arrays):
    """Write (meta, arrays) as a checkpoint file, atomically."""
    atomic_write_bytes(path, dumps_state(meta, arrays))


def load_state(path):
    """Read and verify a checkpoint file: (meta, arrays) or CheckpointError."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise CheckpointError(f"{path}: no such checkpoint file")
    return _verified(path, path)


def loads_state(data, origin="state"):
    """Verify checkpoint bytes (``dumps_state``'s output): (meta, arrays) or CheckpointError
    whose message starts with ``origin``; a torn, corrupted or foreign payload is refused."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise CheckpointError(f"{origin}: no checkpoint bytes (got {type(data).__name__})")
    return _verified(io.BytesIO(bytes(data)), origin)


def _verified(source, origin):
    try:
        with np.load(source, allow_pickle=False) as npz:
            if not hasattr(npz, "files") or MANIFEST_KEY not in npz.files:
                raise CheckpointError(f"{origin}: not a streamgmm checkpoint (no manifest)")
            manifest = json.loads(npz[MANIFEST_KEY].tobytes().decode())
            arrays = {k: npz[k] for k in npz.files if k != MANIFEST_KEY}
    except CheckpointError:
        raise
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, KeyError, AttributeError,
            json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{origin}: truncated or corrupted checkpoint "
                              f"({type(exc).__name__}: {exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
        fmt = manifest.get("format") if isinstance(manifest, dict) else None
        raise CheckpointError(f"{origin}: not a streamgmm checkpoint (format {fmt!r})")
    version = manifest.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CheckpointError(
            f"{origin}: checkpoint format version {version} is newer than this streamgmm "
            f"({__version__}) supports (<= {FORMAT_VERSION}); upgrade streamgmm to load it")
    if sorted(arrays) != manifest.get("arrays") or _digest(arrays) != manifest.get("sha256"):
        raise CheckpointError(f"{origin}: checksum mismatch: the checkpoint is corrupted")
    return _unjson(manifest["meta"]), arrays


def is_zip(path):
    """By the magic bytes, so a truncated NPZ still counts as one (and is refused as such)."""
    try:
        with open(path, "rb") as fh:
            return fh.read(4) in (b"PK\x03\x04", b"PK\x05\x06")
    except OSError:
        return False


# What a file is, by its first bytes. joblib writes a plain pickle (protocol 2+ starts with
# 0x80) or, with compress=..., the pickle inside zlib, gzip, bz2, xz/lzma or lz4 framing.
_MAGIC = (
    (b"PK\x03\x04", "zip", "a zip archive (NPZ)"),
    (b"PK\x05\x06", "zip", "an empty zip archive"),
    (b"ZF", "joblib", "a joblib file (old zlib format, pickle inside)"),
    (b"\x78\x01", "joblib", "a zlib-compressed joblib file (pickle inside)"),
    (b"\x78\x5e", "joblib", "a zlib-compressed joblib file (pickle inside)"),
    (b"\x78\x9c", "joblib", "a zlib-compressed joblib file (pickle inside)"),
    (b"\x78\xda", "joblib", "a zlib-compressed joblib file (pickle inside)"),
    (b"\x1f\x8b", "joblib", "a gzip-compressed file (joblib/pickle inside, or gzipped data)"),
    (b"BZh", "joblib", "a bz2-compressed file (joblib/pickle inside, or compressed data)"),
    (b"\xfd7zXZ\x00", "joblib", "an xz-compressed file (joblib/pickle inside, or "
                                "compressed data)"),
    (b"\x5d\x00\x00", "joblib", "an lzma-compressed joblib file (pickle inside)"),
    (b"\x04\x22\x4d\x18", "joblib", "an lz4-compressed joblib file (pickle inside)"),
    (b"\x93NUMPY", "npy", "a single NumPy array (.npy), not a streamgmm model"),
    (b"\x89HDF", "hdf5", "an HDF5 file (e.g. a Keras/h5py model), not a streamgmm model"),
    (b"\x28\xb5\x2f\xfd", "zstd", "a zstd-compressed file, not a streamgmm model"),
)

#: kinds that are pickles (loading them runs code): only these may be loaded with trusted=True
PICKLE_KINDS = ("pickle", "joblib")


def identify(path):
    """``(kind, description)`` of a file, by its magic bytes (never by its name).

    kinds: ``zip`` (NPZ: a streamgmm model or checkpoint, maybe truncated), ``pickle`` and
    ``joblib`` (pickle-based: need trust to load), ``npy``, ``hdf5``, ``zstd``, ``json``,
    ``yaml``, ``csv``, ``text``, ``empty``, ``directory``, ``missing``, ``unreadable`` or
    ``binary`` (unknown). The description is a phrase for messages ("a JSON document").
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        return "directory", "a directory"
    if not os.path.exists(path):
        return "missing", "missing (no such file)"
    try:
        with open(path, "rb") as fh:
            head = fh.read(4096)
    except OSError as exc:
        return "unreadable", f"unreadable ({exc.strerror or exc})"
    if not head:
        return "empty", "an empty file"
    if head[0] == 0x80 and len(head) > 1 and 2 <= head[1] <= 5:  # PROTO opcode, protocol 2-5
        return "pickle", "a pickle-based (joblib) file"
    for magic, kind, text in _MAGIC:
        if head.startswith(magic):
            return kind, text
    return _identify_text(head)


def _identify_text(head):
    """Text formats: JSON (a document or JSON lines), CSV, YAML, or plain text; else binary."""
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(head) - 4:  # not merely a multi-byte char cut at the 4 KiB mark
            return "binary", "a binary file of an unknown format"
        text = head[:exc.start].decode("utf-8")
    if "\x00" in text:
        return "binary", "a binary file of an unknown format"
    stripped = text.lstrip("\ufeff \t\r\n")
    first = stripped.splitlines()[0] if stripped else ""
    if stripped[:1] in ("{", "["):
        lines = [ln for ln in stripped.splitlines() if ln.strip()]
        if len(lines) > 1 and all(ln.lstrip()[:1] == "{" for ln in lines[:3]):
            return "json", "a JSON-lines text file (records, not a model)"
        return "json", "a JSON document (text), not a model"
    if first.count(",") >= 1 and not first.startswith("#"):
        return "csv", "a CSV text file (data, not a model)"
    if ":" in first and not first.startswith(("http", "#!")):
        return "yaml", "a YAML/text file (a config?), not a model"
    return "text", "a text file, not a model"


def export_joblib(path, meta, arrays):
    """Write (meta, arrays) as a joblib file of plain dicts and arrays (loading it needs
    trusted=True: joblib files are pickles)."""
    import joblib
    buf = io.BytesIO()
    joblib.dump({"format": FORMAT_NAME, "format_version": FORMAT_VERSION,
                 "meta": _jsonable(meta), "arrays": dict(arrays)}, buf)
    atomic_write_bytes(path, buf.getvalue())


def read_joblib(path, trusted):
    """What a joblib file holds: ("state", (meta, arrays)) for our own export, else
    ("object", obj) (e.g. scikit-learn estimators). Refused unless ``trusted``."""
    kind, what = identify(path)
    if kind not in PICKLE_KINDS:
        raise CheckpointError(f"{path}: not a streamgmm model or checkpoint: it is {what}")
    if not trusted:
        raise CheckpointError(
            f"{path}: not an NPZ checkpoint; it is {what}, and "
            f"loading one can execute code. Load it only if you trust its source: pass "
            f"trusted=True (CLI --trusted, config model.trusted: true).")
    import joblib
    try:
        obj = joblib.load(path)
    except Exception as exc:
        raise CheckpointError(f"{path}: cannot read joblib file "
                              f"({type(exc).__name__}: {exc})") from None
    if isinstance(obj, dict) and obj.get("format") == FORMAT_NAME:
        if obj.get("format_version", 0) > FORMAT_VERSION:
            raise CheckpointError(f"{path}: format version {obj['format_version']} is newer "
                                  f"than supported ({FORMAT_VERSION})")
        return "state", (_unjson(obj["meta"]), obj["arrays"])
    return "object", obj


def read_model_file(path, trusted=False):
    """What a model or checkpoint file holds: ("state", (meta, arrays)) for an NPZ checkpoint
    (verified) or our joblib export, ("object", obj) for other joblib content (e.g.
    scikit-learn estimators; trusted only). Decided by the file's magic bytes."""
    path = os.fspath(path)
    if os.path.exists(path) and not is_zip(path):
        return read_joblib(path, trusted)
    return "state", load_state(path)
