"""The import graph of liqsignal/ runs downwards only (docs/architecture.md): every import of a
liqsignal module, lazy ones inside functions included, goes to the same layer or a lower one, and
the kernel imports nothing of the package."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "liqsignal"

#: docs/architecture.md's table, bottom (1) to top (9); a module not listed fails the test.
LAYERS: dict[str, int] = {
    "nb": 1, "exceptions": 1, "_optional": 1,
    "config": 2, "tiers": 2, "markets": 2,
    "features": 3, "engine": 3, "guards": 3, "clusters": 3,
    "data": 4, "replay": 5,
    "datasets": 6, "finebars": 6, "yardstick": 6, "evaluate": 6, "forecast": 6, "calibrate": 6,
    "sweep": 6, "stats": 6, "guard_report": 6, "plot": 6, "plot_html": 6, "realized_scale": 6,
    "alerts": 7,
    "freqtrade": 8, "columns": 8, "guard_mixin": 8, "freqai": 8, "column_cache": 8,
    "cli": 9, "cli_evaluate": 9, "cli_forecast": 9, "cli_watch": 9, "cli_liquidations": 9,
    "cli_alerts": 9, "__main__": 9, "__init__": 9,
}  # fmt: skip


def _room(module: str) -> str:
    """``liqsignal.data.store`` -> ``data``; ``liqsignal.nb`` -> ``nb``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _modules() -> list[Path]:
    return sorted(p for p in PKG.rglob("*.py") if "__pycache__" not in p.parts)


def _imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text())
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "liqsignal":
                out += [(node.lineno, f"liqsignal.{a.name}") for a in node.names]
            elif node.module.startswith("liqsignal."):
                out.append((node.lineno, node.module))
        elif isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names if a.name.startswith("liqsignal.")]
    return out


def _name(path: Path) -> str:
    rel = path.relative_to(PKG.parent).with_suffix("")
    return ".".join(rel.parts)


def test_every_module_has_a_layer():
    missing = sorted({_room(_name(p)) for p in _modules()} - set(LAYERS))
    assert not missing, f"modules without a layer in docs/architecture.md: {missing}"


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PKG)))
def test_imports_run_downwards(path: Path):
    me = _name(path)
    mine = LAYERS[_room(me)]
    up = []
    for line, target in _imports(path):
        room = _room(target)
        if room == "__init__":
            continue  # ``from liqsignal import nb`` names the module itself
        if LAYERS.get(room, 99) > mine:
            up.append(f"{path.name}:{line} imports {target} (layer {LAYERS.get(room)} > {mine})")
    assert not up, "\n".join(up)


def test_the_kernel_imports_nothing_of_the_package():
    assert _imports(PKG / "nb.py") == []
