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
