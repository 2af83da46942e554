"""The layers of docs/ARCHITECTURE.md, checked on the imports: an arrow that must never exist fails here."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "hsvae"

#: what each layer may import: hsvae layers and the frameworks (torch, numpy and the standard library: always)
ALLOWED: dict[str, set[str]] = {
    "special": set(),
    "distributions": {"special"},
    "latents": {"distributions", "special"},
    "models": {"latents", "distributions", "special"},
    "evaluation": {"latents", "distributions", "special", "utils"},
    "utils": {"latents", "pytorch_lightning"},
    "data": {"evaluation", "utils", "pytorch_lightning"},
    "training": {"models", "latents", "distributions", "special", "data", "evaluation", "utils", "pytorch_lightning",
                 "lightning_fabric", "wandb"},
    "stack": {"training", "models", "latents", "distributions", "special", "data", "evaluation", "utils",
              "pytorch_lightning", "lightning_fabric"},
    "analysis": {"utils"},
    "sweeps": {"analysis", "utils", "hydra", "omegaconf"},
}
#: frameworks a layer must name in ALLOWED to import
FRAMEWORKS = {"pytorch_lightning", "lightning_fabric", "lightning", "hydra", "omegaconf", "wandb"}


def imported(path: Path) -> set[str]:
    """The hsvae layers and frameworks a module imports (absolute imports; relative ones stay in the layer)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        modules = [a.name for a in node.names] if isinstance(node, ast.Import) else \
            [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module else []
        for module in modules:
            parts = module.split(".")
            if parts[0] == "hsvae" and len(parts) > 1:
                names.add(parts[1])
            elif parts[0] in FRAMEWORKS:
                names.add(parts[0])
    return names


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_a_layer_imports_only_the_layers_below_it(layer):
    for path in sorted((PACKAGE / layer).rglob("*.py")):
        unexpected = imported(path) - ALLOWED[layer] - {layer}
        assert not unexpected, f"{path.relative_to(PACKAGE.parent)} imports {sorted(unexpected)}"


def test_every_layer_is_listed():
    layers = {p.name for p in PACKAGE.iterdir() if p.is_dir() and not p.name.startswith("_")}
    assert layers - {"cli"} == set(ALLOWED), "a new folder of hsvae/ needs its place in ALLOWED and the doc"


def test_the_check_sees_an_import():
    assert imported(PACKAGE / "training" / "task.py") >= {"pytorch_lightning", "utils"}


#: the imports of hsvae's own modules made inside a function, by module, and why: the light entry points import the
#: run (torch, Lightning) once the config is composed, so that a config error is one line at once ...
LAZY_IMPORTS = {
    "hsvae/cli/entry_points.py": 2,
}
#: ... and, for an optional dependency (Optuna, the `search` extra) that a plain run must not need: the search's
#: plugin and a search trial import the study only when a search runs.
OPTIONAL_DEPENDENCY_IMPORTS = {
    "hydra_plugins/hsvae_search/optuna_search_sweeper.py": 1,
    "hsvae/cli/search_trial.py": 1,
}


def function_level_imports(path: Path) -> int:
    """Imports of hsvae's own modules inside a function body of ``path``."""
    count = 0
    for function in ast.walk(ast.parse(path.read_text())):
        if isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for node in ast.walk(function):
                if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == "hsvae":
                    count += 1
                elif isinstance(node, ast.ImportFrom) and node.level > 0:
                    count += 1
                elif isinstance(node, ast.Import) and any(a.name.split(".")[0] == "hsvae" for a in node.names):
                    count += 1
    return count


def test_no_function_level_import_of_hsvae_beyond_the_listed_ones():
    """A function-level import of the package's own modules hides an import cycle: none beyond the two lists (a
    ratchet: they only shrink), and at most 3 outside those for an optional dependency."""
    root = PACKAGE.parent
    found = {}
    for path in sorted([*PACKAGE.rglob("*.py"), *(root / "hydra_plugins").rglob("*.py")]):
        n = function_level_imports(path)
        if n:
            found[str(path.relative_to(root))] = n
    assert found == {**LAZY_IMPORTS, **OPTIONAL_DEPENDENCY_IMPORTS}
    assert sum(LAZY_IMPORTS.values()) <= 3, "at most 3 function-level imports of hsvae's own modules (issue 25)"


def test_the_function_level_import_check_sees_one(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("import hsvae\n\ndef f():\n    from hsvae.cli import train\n    import os\n")
    assert function_level_imports(module) == 1


def datamodule_probes(path: Path) -> list[int]:
    """Lines of ``path`` that ask a data module what it has by name (``getattr`` / ``hasattr`` on a name with
    "data" in it) instead of through a Protocol (hsvae/evaluation/protocols.py, hsvae/data/base.py)."""
    lines = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("getattr", "hasattr") \
                and node.args and isinstance(node.args[0], ast.Name) and "data" in node.args[0].id:
            lines.append(node.lineno)
    return lines


def test_no_datamodule_is_probed_by_getattr():
    found = {str(path.relative_to(PACKAGE.parent)): datamodule_probes(path) for path in sorted(PACKAGE.rglob("*.py"))}
    assert {path: lines for path, lines in found.items() if lines} == {}


def test_the_probe_check_sees_one(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("def f(datamodule):\n    return getattr(datamodule, 'splits', None)\n")
    assert datamodule_probes(module) == [2]
