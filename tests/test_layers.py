"""The layering rule: a package imports only from the layers to its left (docs/architecture.md)."""

from __future__ import annotations

import ast
from pathlib import Path

import advlab

# rank of each top-level package; a module may import packages of lower rank, and its own
LAYERS = {
    "__init__": 0, "errors": 0, "runtime": 0.5,
    "data": 1,
    "models": 2,
    "training": 3,
    "robust": 4, "attacks": 4, "poisoning": 4,
    "detection": 5, "defenses": 5,
    "evaluation": 6,
    "report": 7,
    "serve": 8, "lab": 8.5, "demo": 8.7,
    "cli": 9, "__main__": 10,
}
ROOT = Path(advlab.__file__).parent


def _package(path: Path) -> str:
    rel = path.relative_to(ROOT).parts
    return rel[0].removesuffix(".py")


def _imported_packages(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module + "." + alias.name for alias in node.names] if node.module == "advlab" \
                else [node.module]
        for name in names:
            parts = name.split(".")
            if parts[0] == "advlab" and len(parts) > 1 and parts[1] != "__version__":
                found.add(parts[1])
    return found


def test_every_package_is_placed_in_a_layer():
    packages = {_package(p) for p in ROOT.rglob("*.py")}
    assert packages <= set(LAYERS), f"place {packages - set(LAYERS)} in LAYERS and docs/architecture.md"


def test_no_module_imports_from_its_right():
    violations = []
    for path in sorted(ROOT.rglob("*.py")):
        own = _package(path)
        for imported in _imported_packages(path) - {own}:
            if LAYERS.get(imported, 99) >= LAYERS[own]:
                violations.append(f"{path.relative_to(ROOT)} imports advlab.{imported}")
    assert not violations, "\n".join(violations)


# CLI modules that still import another CLI module; issue 18's other part moves what they share
# into the library, then this set empties.
CLI_IMPORTS_PENDING: set = set()


def test_no_cli_module_imports_another_but_the_shared_options():
    found = set()
    for path in sorted((ROOT / "cli").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module] if isinstance(node, ast.ImportFrom) and node.module else []
            for name in names:
                parts = name.split(".")
                if parts[:2] == ["advlab", "cli"] and len(parts) > 2 and parts[2] != "common":
                    found.add((path.stem, parts[2]))
    assert found <= CLI_IMPORTS_PENDING, f"CLI modules importing others: {sorted(found - CLI_IMPORTS_PENDING)}"


def test_the_demo_sections_live_in_the_demo_package_not_the_cli():
    from advlab.demo import demo_sections

    assert [name for _, name, _ in demo_sections()] == ["attack", "blackbox", "evaluate", "certify", "backdoor",
                                                        "autoencoder", "physical", "physical3d"]
    for path in (ROOT / "cli").glob("*.py"):
        tree = ast.parse(path.read_text())
        defined = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
        assert "demo_section" not in defined, f"{path.name} defines a demo section; put it in advlab/demo/"
