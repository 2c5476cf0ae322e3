"""The package's import graph has no circle, counting imports inside functions; only imports under
``if TYPE_CHECKING:`` are exempt. Read from the source with ``ast`` (nothing is imported), over every
module of the package, so a module added later is checked too.

Also: importing gptlearn and generating text never imports the fused C++ step (only ``fused=True`` does);
importing gptlearn never imports the trainer; an own-module import inside a function says why it is there.
"""
from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "gptlearn"


def module_names(root: Path) -> dict[str, Path]:
    """Every module of the package under ``root``: dotted name -> file (a package is its __init__.py)."""
    names = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join(parts)] = path
    return names


def _type_checking_only(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> bool:
    while node in parents:
        node = parents[node]
        if isinstance(node, ast.If):
            test = node.test
            if (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
                    isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"):
                return True
    return False


def imports_of(name: str, path: Path, modules: set[str]) -> set[str]:
    """The package's modules that ``name`` imports anywhere in its source, TYPE_CHECKING blocks excepted."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if not isinstance(node, (ast.Import, ast.ImportFrom)) or _type_checking_only(node, parents):
            continue
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(up + ([node.module] if node.module else []))
            # `from pkg import sub` imports the submodule pkg.sub; `from mod import name` imports mod
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
        for target in targets:
            while target and target not in modules:  # `import a.b.c` of a package module, or outside it
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def import_graph(root: Path) -> dict[str, set[str]]:
    modules = module_names(root)
    return {name: imports_of(name, path, set(modules)) for name, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One circle of imports as a path [a, b, ..., a], or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def test_the_package_import_graph_has_no_circle():
    graph = import_graph(PACKAGE)
    cycle = find_cycle(graph)
    assert cycle is None, "import circle: " + " -> ".join(cycle)
    # the graph is the real one, not an empty reading of it
    assert {"gptlearn.attention", "gptlearn.pretrained", "gptlearn.hooks"} <= graph["gptlearn.model"]
    assert {"gptlearn.model", "gptlearn.fast.linear"} <= graph["gptlearn.generate"]
    assert "gptlearn.kv_cache" in graph["gptlearn.attention"]
    assert "gptlearn.fast.fused" in graph["gptlearn.generate"]  # an import inside a function counts
    assert "gptlearn.model" not in graph["gptlearn.kv_cache"]  # a TYPE_CHECKING import does not


def test_the_checker_finds_circles_through_functions_and_skips_type_checking(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("from .a import A\n")
    (pkg / "a.py").write_text("from . import b\nA = 1\n")
    (pkg / "b.py").write_text("def f():\n    from .sub.c import C\n")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "c.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ..a import A\nC = "
                                      "2\n")
    graph = import_graph(pkg)
    assert graph == {"pkg": {"pkg.a"}, "pkg.a": {"pkg.b"}, "pkg.b": {"pkg.sub.c"}, "pkg.sub": set(), "pkg.sub.c": set()}
    assert find_cycle(graph) is None
    (pkg / "sub" / "c.py").write_text("import pkg.a\nC = 2\n")  # now outside TYPE_CHECKING
    assert find_cycle(import_graph(pkg)) == ["pkg.a", "pkg.b", "pkg.sub.c", "pkg.a"]


def test_the_model_imports_nothing_above_it():
    """model.py reads as plain PyTorch: the speed wing and the sampling loop plug into it from outside (their
    modules import model.py, never the other way), anywhere in its source, functions included."""
    graph = import_graph(PACKAGE)
    below = graph["gptlearn.model"]
    assert not {"gptlearn.fast", "gptlearn.generate"} & below, below
    assert not any(m.startswith("gptlearn.fast.") for m in below), below
    assert "gptlearn.model" in graph["gptlearn.fast"] and "gptlearn.model" in graph["gptlearn.generate"]


def test_gpt_says_which_implementation_it_runs():
    import gptlearn
    from gptlearn.fast import is_enabled

    config = gptlearn.GPTConfig(n_layer=1, n_head=2, n_embd=16, n_positions=16, vocab_size=50)
    fast, plain = gptlearn.GPT(config), gptlearn.GPT(config, fast=False)
    assert (fast.implementation, plain.implementation) == ("fast", "plain")
    assert is_enabled(fast) and not is_enabled(plain)
    assert "implementation='fast'" in repr(fast)
    with pytest.raises(gptlearn.GptlearnError, match="implementation"):
        gptlearn.GPT(config, implementation="flash")


@pytest.mark.slow
def test_generating_text_never_imports_the_fused_step():
    code = ("import sys, torch, gptlearn\n"
            "m = gptlearn.GPT(gptlearn.GPTConfig(n_layer=1, n_head=2, n_embd=16, n_positions=16, vocab_size=50))\n"
            "m.generate(torch.tensor([[1, 2]]), 3, do_sample=False)\n"
            "m.generate(torch.tensor([[1, 2]]), 3, do_sample=False, use_cache=False)\n"
            "print('gptlearn.fast.fused' in sys.modules, 'torch.utils.cpp_extension' in sys.modules)\n")
    env = {**os.environ, "PYTHONPATH": str(PACKAGE.parent)}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.split() == ["False", "False"]


def test_own_module_imports_inside_functions_say_why():
    """The package's own modules are imported at the top, where a reader sees the graph; one imported inside a
    function carries a comment just above it saying why ("here, not at the top: ...")."""
    unexplained = []
    for name, path in module_names(PACKAGE).items():
        lines = path.read_text(encoding="utf-8").splitlines()
        for func in ast.walk(ast.parse("\n".join(lines))):
            if not isinstance(func, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(func):
                own = (isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("gptlearn"))
                       or isinstance(node, ast.Import) and any(a.name.startswith("gptlearn") for a in node.names))
                if not own:
                    continue
                above = [line.strip() for line in lines[max(0, node.lineno - 4):node.lineno - 1]]
                if not any(line.startswith("#") and "not at the top" in line for line in above):
                    unexplained.append(f"{name}:{node.lineno}")
    assert not unexplained, unexplained


def test_importing_the_package_or_its_command_line_never_imports_the_trainer():
    """``python -m gptlearn.train`` runs train.py as __main__; had ``import gptlearn`` imported it already,
    Python would warn and hold two copies of the module."""
    code = "import sys, gptlearn, gptlearn.cli\nprint('gptlearn.train' in sys.modules)\n"
    env = {**os.environ, "PYTHONPATH": str(PACKAGE.parent)}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.split() == ["False"]
