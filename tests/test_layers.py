"""The package's shape: the import contract, no import cycles, small modules, a README layout that matches."""

import ast
import re
import shutil
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "cad_recode"
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")
# The one allowed cycle: the sandbox starts its worker module, which reuses the sandbox's frame codec.
ALLOWED_CYCLES = [{"cad_recode.geometry.sandbox", "cad_recode.geometry._sandbox_worker"}]
MAX_MODULE_LINES, MAX_FUNCTION_LINES = 500, 80
SIZE_NOTE = "# size:"


def _lint(src: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(LINT_IMPORTS), "--config", str(ROOT / "pyproject.toml"), "--no-cache"],
                          cwd=ROOT, env={"PYTHONPATH": str(src), "PATH": "/usr/bin:/bin"},
                          capture_output=True, text=True, timeout=300)


def test_import_contracts_are_kept():
    result = _lint(ROOT / "src")
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"Contracts: (\d+) kept, 0 broken", result.stdout)


def test_an_upward_import_breaks_the_contract_with_the_offending_line(tmp_path):
    """The contract has teeth: geometry importing the CLI fails and names where."""
    copy = tmp_path / "src"
    shutil.copytree(PACKAGE, copy / "cad_recode", ignore=shutil.ignore_patterns("__pycache__"))
    normalize = copy / "cad_recode" / "geometry" / "normalize.py"
    normalize.write_text(normalize.read_text() + "\nimport cad_recode.cli  # an upward import\n")
    result = _lint(copy)
    assert result.returncode != 0
    assert "BROKEN" in result.stdout and "cad_recode.geometry.normalize -> cad_recode.cli" in result.stdout


def _cycles(graph) -> list[set[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative enough for ~60 modules)."""
    sys.setrecursionlimit(10_000)
    index, low, stack, on_stack, found, counter = {}, {}, [], set(), [], [0]

    def visit(module: str) -> None:
        index[module] = low[module] = counter[0]
        counter[0] += 1
        stack.append(module)
        on_stack.add(module)
        for target in graph.find_modules_directly_imported_by(module):
            if not target.startswith("cad_recode"):
                continue
            if target not in index:
                visit(target)
                low[module] = min(low[module], low[target])
            elif target in on_stack:
                low[module] = min(low[module], index[target])
        if low[module] == index[module]:
            component = set()
            while True:
                item = stack.pop()
                on_stack.discard(item)
                component.add(item)
                if item == module:
                    break
            if len(component) > 1:
                found.append(component)

    for module in sorted(graph.modules):
        if module.startswith("cad_recode") and module not in index:
            visit(module)
    return found


def test_no_import_cycles_but_the_documented_one():
    graph = grimp.build_graph("cad_recode")
    assert [c for c in _cycles(graph) if c not in ALLOWED_CYCLES] == []


def _oversized() -> list[str]:
    problems = []
    for path in sorted(PACKAGE.rglob("*.py")):
        lines = path.read_text(encoding="utf-8").splitlines()
        name = path.relative_to(PACKAGE).as_posix()
        if len(lines) > MAX_MODULE_LINES and not any(SIZE_NOTE in line for line in lines[:40]):
            problems.append(f"{name}: {len(lines)} lines")
        for node in ast.walk(ast.parse("\n".join(lines))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                head = lines[node.lineno - 1 : node.lineno + 8]
                if length > MAX_FUNCTION_LINES and not any(SIZE_NOTE in line for line in head):
                    problems.append(f"{name}: {node.name}() {length} lines")
    return problems


def test_modules_and_functions_stay_small_or_say_why():
    assert _oversized() == []


def test_readme_layout_lists_every_module_and_nothing_else():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("### Layout", 1)[1].split("\n## ", 1)[0]
    listed = set(re.findall(r"^\| `([\w/]+\.py)` \|", section, flags=re.M))
    modules = {p.relative_to(PACKAGE).as_posix() for p in PACKAGE.rglob("*.py")
               if p.name not in ("__init__.py", "__main__.py")}
    assert sorted(modules - listed) == [], "modules missing from the README's layout"
    assert sorted(listed - modules) == [], "README layout names modules that do not exist"


@pytest.mark.parametrize("module", ["cad_recode.training.recipe", "cad_recode.merge"])
def test_recipes_that_must_not_load_inference_do_not(module):
    """Importing the training recipe or merge must not pull in the inference package (a fresh interpreter)."""
    code = f"import sys, {module}; print(any(m.startswith('cad_recode.inference') for m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert out.stdout.strip() == "False", out.stderr
