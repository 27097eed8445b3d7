"""The package's shape: stages are subpackages, imports run one way, planning needs no torch.

These walk the source with ``ast``; nothing is imported except in the torch checks, which run in a
fresh interpreter so that this test process's own imports cannot hide one.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from support import ROOT

SRC = ROOT / "src"
PACKAGE = SRC / "ehrscale"
STAGES = ("core", "synth", "extract", "tokens", "labels", "model", "plan", "train", "probe", "fit", "report")


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports(path: Path) -> list[tuple[str, str | None, int]]:
    """(module, imported name or None, line) for every ehrscale import in the file, nested ones included."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [(a.name, None, node.lineno) for a in node.names if a.name.startswith("ehrscale")]
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("ehrscale") and not node.level:
            for a in node.names:
                sub = f"{node.module}.{a.name}"
                out.append((sub, None, node.lineno) if sub in MODULES else (node.module, a.name, node.lineno))
    return out


def import_graph() -> dict[str, set[str]]:
    graph = {}
    for name, path in MODULES.items():
        targets = set()
        own_packages = {name.rsplit(".", i)[0] for i in range(1, name.count(".") + 1)}  # loaded before `name` anyway
        for module, _, _ in imports(path):
            # importing a.b.c runs a/__init__ and a/b/__init__ too
            parts = module.split(".")
            targets |= {".".join(parts[:i]) for i in range(2, len(parts) + 1)} & set(MODULES)
        graph[name] = targets - own_packages - {name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_find_cycle_finds_a_planted_circle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_no_import_circles():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import circle: " + " -> ".join(cycle)


def test_no_imports_of_another_modules_private_names():
    bad = [f"{module_name(path)}:{line} imports {name} from {module}"
           for path in MODULES.values() for module, name, line in imports(path)
           if name and name.startswith("_") and not name.startswith("__")]
    assert not bad, "\n".join(bad)


def test_every_stage_is_a_subpackage_with_its_rule_file():
    for stage in STAGES:
        assert (PACKAGE / stage / "__init__.py").is_file(), f"src/ehrscale/{stage}/ is not a package"
    rule_files = {p.stem for p in (ROOT / "workflow" / "rules").glob("*.smk")} - {"common"}
    assert rule_files <= set(STAGES), f"rule files without a package of their name: {rule_files - set(STAGES)}"
    top_level = {p.stem for p in PACKAGE.glob("*.py")}
    assert top_level <= {"__init__", "__main__", "cli"}, f"modules outside a stage: {sorted(top_level)}"


def test_no_module_shadows_the_standard_library():
    shadows = sorted(n for n in MODULES if n.rsplit(".", 1)[-1] in sys.stdlib_module_names)
    assert not shadows, shadows


def test_the_cli_runs_as_a_script():
    """``python src/ehrscale/cli.py``: the script's folder is first on sys.path, where a module named like
    a standard one (tokenize, io) would break the interpreter's own imports."""
    result = subprocess.run([sys.executable, str(PACKAGE / "cli.py"), "--help"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "usage: ehrscale" in result.stdout


def test_no_function_is_longer_than_100_lines():
    long = []
    for name, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno + 1 > 100:
                long.append(f"{name}.{node.name}: {node.end_lineno - node.lineno + 1} lines")
    assert not long, long


PLANNING = ["ehrscale.plan.rules", "ehrscale.plan.grid", "ehrscale.plan.workflow", "ehrscale.plan.command",
            "ehrscale.model.config", "ehrscale.core.config"]


@pytest.mark.parametrize("module", PLANNING)
def test_planning_imports_no_torch(module):
    code = f"import sys, {module}; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False", f"importing {module} imports torch"


def test_the_dag_is_built_without_torch(tmp_path):
    """``snakemake -n`` parses the Snakefile and every rule file; ``-X importtime`` lists each import."""
    (tmp_path / "config").symlink_to(ROOT / "config")  # the config and the task files, relative to the workdir
    result = subprocess.run([sys.executable, "-X", "importtime", "-m", "snakemake", "-n", "--quiet", "rules",
                             "-s", str(ROOT / "Snakefile"), "--directory", str(tmp_path)],
                            capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    imported = {line.split("|")[-1].strip() for line in result.stderr.splitlines() if line.startswith("import time:")}
    assert "ehrscale.plan.workflow" in imported  # the check can see the workflow's imports
    assert "torch" not in imported
