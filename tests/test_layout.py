"""The package's import graph: no circle, the pipeline never reaches back into KnowledgeBase, and a
module imports its own package's modules inside a function only where a comment says why."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# where each installed package's source lives (pyproject's package-dir)
PACKAGES = {"ragglm": REPO / "ragglm", "ragglm.pipelines": REPO / "pipelines", "ragglm.connectors": REPO / "connectors"}


def modules() -> dict[str, Path]:
    found = {}
    for package, folder in PACKAGES.items():
        for path in folder.rglob("*.py"):
            parts = path.relative_to(folder).with_suffix("").parts
            found[".".join((package, *parts[:-1])) if parts[-1] == "__init__" else ".".join((package, *parts))] = path
    return found


def imported(node: ast.AST) -> list[str]:
    if isinstance(node, ast.ImportFrom) and node.level == 0:
        return [node.module or ""]
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    return []


def top_level_imports(path: Path, known: dict[str, Path]) -> set[str]:
    """Package modules imported when this one is (not those imported inside functions)."""
    found = set()
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        for name in imported(node):
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name:
                found.add(name)
    return found


def test_no_import_circle():
    known = modules()
    graph = {name: top_level_imports(path, known) - {name} for name, path in known.items()}
    circles, state = [], {}

    def visit(name: str, trail: list[str]) -> None:
        state[name] = "open"
        for other in sorted(graph[name]):
            if state.get(other) == "open":
                circles.append(trail[trail.index(other):] + [other])
            elif other not in state:
                visit(other, trail + [other])
        state[name] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert not circles, circles


def test_the_pipeline_does_not_import_the_knowledge_base():
    for path in PACKAGES["ragglm.pipelines"].rglob("*.py"):
        names = [n for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))) for n in imported(node)]
        assert "ragglm.knowledge_base" not in names, path


def test_imports_inside_functions_say_why():
    silent = []
    for name, path in modules().items():
        if name == "ragglm.cli":  # imports on demand throughout, so that --help and bad input are quick
            continue
        lines = path.read_text(encoding="utf-8").splitlines()
        for node in ast.walk(ast.parse("\n".join(lines))):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for inner in ast.walk(node):
                own = [n for n in imported(inner) if n.startswith("ragglm")]
                if own and not any("#" in lines[i] for i in range(inner.lineno - 1, inner.end_lineno)):
                    silent.append(f"{path.relative_to(REPO)}:{inner.lineno} imports {own[0]}")
    assert not silent, silent


def test_every_package_is_installed():
    """pyproject lists its packages by name: a new folder missing there works in a checkout and is
    absent from a built wheel."""
    import tomllib  # only this test reads the project file

    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]["packages"])
    found = {".".join((name, *init.parent.relative_to(root).parts))
             for name, root in PACKAGES.items() for init in root.rglob("__init__.py")}
    assert found - listed == set()
