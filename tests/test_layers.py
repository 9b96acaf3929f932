"""The package's layers import only downward, and nothing rewrites another library's internals.

Order, lowest first: math -> models -> persistence -> detection -> service and tools (tools
are beside the service: the CLI offers them, the runtime never imports them). Checked with `ast`, so a
lazy import inside a function counts too.
"""
import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "streamgmm"
RANK = {"math": 0, "models": 1, "persistence": 2, "detection": 3, "service": 4, "tools": 4}


def _layer(module: str):
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "streamgmm" else None


def _imports(path: Path):
    """Absolute module names imported by a file (relative imports resolved)."""
    rel = path.relative_to(PKG.parent).with_suffix("")
    pkg_parts = list(rel.parts[:-1]) if rel.name != "__init__" else list(rel.parts[:-1])
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                yield a.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg_parts[: len(pkg_parts) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            yield mod, node.lineno
            for a in node.names:  # `from . import x` imports a sibling module
                yield f"{mod}.{a.name}", node.lineno


def test_imports_only_go_down():
    bad = []
    files = sorted(PKG.rglob("*.py"))
    assert len(files) > 30
    for f in files:
        me = _layer(".".join(f.relative_to(PKG.parent).with_suffix("").parts))
        if me not in RANK:
            continue
        for mod, line in _imports(f):
            other = _layer(mod)
            if other in RANK and RANK[other] > RANK[me]:
                bad.append(f"{f.relative_to(PKG.parent)}:{line} ({me}) imports {mod} ({other})")
    assert not bad, "upward imports:\n" + "\n".join(bad)


def test_the_runtime_does_not_import_the_tools():
    bad = [f"{f.relative_to(PKG.parent)}:{line}"
           for f in sorted((PKG / "service").rglob("*.py")) if "cli" not in f.parts
           for mod, line in _imports(f) if _layer(mod) == "tools"]
    assert not bad, bad


def test_no_module_patches_kafka_python():
    """No assignment to an attribute of a kafka module (e.g. calc_crc32c) anywhere."""
    bad = []
    for f in sorted(PKG.rglob("*.py")):
        tree = ast.parse(f.read_text())
        kafka_names = {a.asname or a.name for n in ast.walk(tree) if isinstance(n, ast.Import)
                       for a in n.names if a.name.split(".")[0] == "kafka"}
        kafka_names |= {a.asname or a.name for n in ast.walk(tree)
                        if isinstance(n, ast.ImportFrom) and (n.module or "").startswith("kafka")
                        for a in n.names}
        for n in ast.walk(tree):
            targets = n.targets if isinstance(n, ast.Assign) else (
                [n.target] if isinstance(n, (ast.AugAssign, ast.AnnAssign)) else [])
            for t in targets:
                root = t
                while isinstance(root, ast.Attribute):
                    root = root.value
                if isinstance(t, ast.Attribute) and isinstance(root, ast.Name) \
                        and root.id in kafka_names:
                    bad.append(f"{f.relative_to(PKG.parent)}:{n.lineno}")
            if isinstance(n, ast.Call) and getattr(n.func, "id", None) == "setattr" and n.args \
                    and isinstance(n.args[0], ast.Name) and n.args[0].id in kafka_names:
                bad.append(f"{f.relative_to(PKG.parent)}:{n.lineno}")
    assert not bad, bad
