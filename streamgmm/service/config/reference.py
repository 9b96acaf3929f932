"""The key tables of docs/configuration.md, derived from the one schema.

    python -m streamgmm.service.config.reference --write docs/configuration.md   # regenerate
    python -m streamgmm.service.config.reference                                 # print rows

``--write`` replaces every table row whose key is in the schema (prose around the tables is
kept) and fails if the file lists a key the schema does not have or lacks one it has.
"""
from __future__ import annotations

import argparse
import re
import sys

from ...schema import REQUIRED, default_of, iter_settings
from .loader import Config

_ROW = re.compile(r"^\| `([A-Za-z0-9_.]+)` \|.*\|$", re.M)


def default_text(value) -> str:
    """A default as it reads in YAML."""
    if value is REQUIRED:
        return "required"
    if value is None:
        return "`null`"
    if isinstance(value, bool):
        return "`true`" if value else "`false`"
    if isinstance(value, (list, tuple)):
        return "`[" + ", ".join(str(v) for v in value) + "]`"
    if isinstance(value, dict):
        return "`{}`" if not value else f"`{value}`"
    return f"`{value}`"


def rows() -> dict:
    """key -> the markdown table row for it."""
    return {key: f"| `{key}` | {default_text(default_of(f))} | {f.metadata['doc']} |"
            for key, f in iter_settings(Config)}


def rewrite(text: str) -> tuple[str, list[str], list[str]]:
    """(text with every schema row regenerated, keys in the text but not the schema, keys in
    the schema but not the text)."""
    want = rows()
    seen = set()

    def sub(m):
        seen.add(m.group(1))
        return want.get(m.group(1), m.group(0))
    out = _ROW.sub(sub, text)
    return out, sorted(seen - set(want)), sorted(set(want) - seen)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--write", metavar="FILE", help="regenerate the rows of this file in place")
    args = ap.parse_args(argv)
    if not args.write:
        print("\n".join(rows().values()))
        return 0
    with open(args.write, encoding="utf-8") as f:
        text, stale, missing = rewrite(f.read())
    with open(args.write, "w", encoding="utf-8") as f:
        f.write(text)
    for key in stale:
        print(f"{args.write}: `{key}` is not a config key", file=sys.stderr)
    for key in missing:
        print(f"{args.write}: no row for `{key}`: add one to the right table", file=sys.stderr)
    return 1 if stale or missing else 0


if __name__ == "__main__":
    sys.exit(main())
