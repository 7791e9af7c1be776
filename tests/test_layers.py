"""The package's layers, as its docstring lists them (src/alexnet/__init__.py), hold in the
code: a module imports only from its own layer and the layers listed before it, so the tree says
where a new callback, figure or dataset goes and the networks stay free of what trains them."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from helpers import ROOT

import alexnet

PACKAGE = ROOT / "src" / "alexnet"


def layer_order(doc: str) -> dict[str, int]:
    """Each top-level module or folder of the package by its line's place in the docstring's
    list: the names in double backticks before a bullet's first colon."""
    bullets = [line.split(":", 1)[0] for line in doc.splitlines()
               if line.startswith("- ") and ":" in line]
    return {name: rank for rank, bullet in enumerate(bullets)
            for name in re.findall(r"``(\w+)``", bullet)}


def imports(path: Path) -> list[tuple[int, str]]:
    """(line, top-level part of the package) of every ``alexnet`` import in a file, those inside
    functions included."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = ([f"{node.module}.{a.name}" for a in node.names]
                     if node.module == "alexnet" else [node.module])
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        found += [(node.lineno, n.split(".")[1]) for n in names
                  if n.startswith("alexnet.")]
    return found


def downward_imports(order: dict[str, int]) -> list[str]:
    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        own = path.relative_to(PACKAGE).parts[0].removesuffix(".py")
        if own == "__init__":
            continue
        for line, target in imports(path):
            if target != own and order[target] > order[own]:
                wrong.append(f"{path.relative_to(ROOT)}:{line} ({own}) imports {target}")
    return wrong


def test_every_part_of_the_package_has_a_layer() -> None:
    order = layer_order(alexnet.__doc__ or "")
    parts = {p.name.removesuffix(".py") for p in PACKAGE.iterdir()
             if (p.suffix == ".py" or (p / "__init__.py").is_file()) and p.name != "__init__.py"}
    assert parts == set(order), (parts ^ set(order))
    assert order["names"] < order["models"] < order["data"] < order["training"] < order["jobs"]


def test_no_module_imports_from_a_layer_below_its_own() -> None:
    assert downward_imports(layer_order(alexnet.__doc__ or "")) == []


def test_an_import_down_the_layers_is_found() -> None:
    order = layer_order(alexnet.__doc__ or "")
    # models before analysis: were the networks to import the report, the rule would say so
    moved = {**order, "models": order["analysis"] + 1}
    assert any("(models) imports" in line or "imports models" in line
               for line in downward_imports(moved))
