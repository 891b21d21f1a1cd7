"""The engine's wings import downward only: model.py at the bottom, engine.py and factory.py on top."""

from __future__ import annotations

import ast
from pathlib import Path

import ragglm.engine

ROOT = Path(ragglm.engine.__file__).parent
# a module may import from its own unit and from units of a lower rank
RANK = {"glm_prefix_lm": 0, "model": 1, "linear": 2, "cache": 2, "tokenizers": 2, "kernels": 3, "loading": 3,
        "constraints": 3, "generate": 4, "remote": 5, "engine": 6, "factory": 7, "__init__": 8}


def unit(module: str) -> str:
    parts = module.split(".")
    return parts[2] if len(parts) > 2 else "__init__"


def engine_imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("ragglm.engine."):
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("ragglm.engine.")}
    return found


def test_no_module_imports_a_unit_above_its_own():
    upward = []
    for path in ROOT.rglob("*.py"):
        relative = path.relative_to(ROOT).with_suffix("")
        own = "__init__" if relative.parts == ("__init__",) else relative.parts[0]
        for module in engine_imports(path):
            other = unit(module)
            if other != own and RANK[other] >= RANK[own]:
                upward.append(f"{relative} imports {module}")
    assert not upward, upward


def test_the_native_step_source_ships_beside_its_loader():
    from ragglm.engine.kernels.fused_decode import SOURCE

    assert SOURCE.is_file() and SOURCE.parent.parent == ROOT / "kernels"
