"""The layers of core/: every import points down, and no module imports itself back through others."""
import ast
from pathlib import Path

import pytest

CORE = Path(__file__).resolve().parents[1] / "core"
# bottom to top; a module may import its own layer and the layers below it, never one above
# (i18n is the bottom leaf: every layer may translate its messages)
LAYERS = ["i18n", "config", "storage", "data", "models", "results", "train", "techniques", "jobs", "app",
          "cli_common", "cli_text", "cli", "__main__"]  # the CLI layer: cli_common under cli_text under cli


def _module(path: Path) -> str:
    rel = path.relative_to(CORE.parent).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """Every core module this file imports, at the top or inside a function (late imports count too)."""
    me = _module(path)
    pkg = me if path.name == "__init__.py" else me.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.split(".")[0] == "core"}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            if base.split(".")[0] != "core":
                continue
            for a in node.names:  # `from core.x import y`: y may be a module or a name inside x
                out.add(f"{base}.{a.name}" if (CORE.parent / f"{base}.{a.name}".replace(".", "/")).exists()
                        or (CORE.parent / (f"{base}.{a.name}".replace(".", "/") + ".py")).exists() else base)
    out.discard(me)
    return out


def _graph() -> dict[str, set[str]]:
    return {_module(p): _imports(p) for p in CORE.rglob("*.py")}


def _layer(module: str) -> int:
    parts = module.split(".")
    if len(parts) == 1:
        return -1  # the package itself
    return LAYERS.index(parts[1].removesuffix(".py"))


def test_every_module_of_core_belongs_to_a_named_layer():
    unknown = sorted(m for m in _graph() if m != "core" and m.split(".")[1] not in LAYERS)
    assert not unknown, f"modules outside the layers {LAYERS}: {unknown}"


def test_core_imports_point_down_only():
    up = sorted(f"{m} -> {d}" for m, deps in _graph().items() if m != "core"
                for d in deps if d != "core" and _layer(d) > _layer(m))
    assert not up, "upward imports (a lower layer must not know a higher one):\n" + "\n".join(up)


def test_core_has_no_import_cycle():
    graph = _graph()
    state: dict[str, int] = {}
    cycles = []

    def visit(node, stack):
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if nxt not in graph:
                continue
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = 2

    for n in sorted(graph):
        if n not in state:
            visit(n, [n])
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_the_checker_sees_a_late_upward_import(tmp_path, monkeypatch):
    """The rule reads imports inside functions too: a late import is still an import."""
    fake = tmp_path / "core"
    (fake / "data").mkdir(parents=True)
    (fake / "train").mkdir()
    (fake / "train" / "loop.py").write_text("")
    (fake / "data" / "x.py").write_text("def f():\n    from core.train import loop\n")
    monkeypatch.setattr(__import__(__name__), "CORE", fake)
    assert "core.train.loop" in _imports(fake / "data" / "x.py")
    with pytest.raises(AssertionError, match="core.data.x -> core.train.loop"):
        test_core_imports_point_down_only()


def test_cli_help_and_a_refused_flag_answer_without_loading_torch():
    """torch and torchvision take seconds to import (torchvision's ops import torch._dynamo): `--help` and a
    value the config refuses are answered before any of it loads."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    probe = ("import sys\nfrom core.cli import main\n"
             "try:\n    code = main(sys.argv[1:])\nexcept SystemExit as e:\n    code = e.code\n"
             "print('torch loaded' if 'torch' in sys.modules else 'no torch', code)")
    for args, code in ((["train", "--help"], 0), (["train", "--data", "sample:digits", "--epochs", "-3"], 2)):
        out = subprocess.run([sys.executable, "-c", probe, *args], cwd=root, capture_output=True, text=True,
                             timeout=120)
        assert out.stdout.splitlines()[-1] == f"no torch {code}", (args, out.stdout[-500:], out.stderr[-500:])
