"""The layering of docs/architecture.md, checked on the source: io → core → job → cli/_qt."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import napari_subtomo_recon

PACKAGE = Path(napari_subtomo_recon.__file__).parent
QT = ("qtpy", "PyQt5", "PyQt6", "PySide2", "PySide6", "napari", "magicgui", "superqt", "vispy")


def imports(path: Path) -> list[tuple[str, bool]]:
    """(absolute module name, at module level?) of every import in a file."""
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    package = list(rel.parts[:-1]) if rel.name != "__init__" else list(rel.parts[:-1])
    tree = ast.parse(path.read_text())
    top = {id(n) for n in tree.body}
    top |= {id(n) for node in tree.body if isinstance(node, ast.If | ast.Try) for n in
            ast.walk(node)}  # fmt: skip
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, id(node) in top) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                name = ".".join([*base, node.module] if node.module else base)
            else:
                name = node.module or ""
            out.append((name, id(node) in top))
    return out


def modules(sub: str) -> list[Path]:
    return sorted((PACKAGE / sub).rglob("*.py")) if sub else sorted(PACKAGE.glob("*.py"))


@pytest.mark.parametrize("layer, forbidden", [
    ("io", ("napari_subtomo_recon.core", "napari_subtomo_recon.job", "napari_subtomo_recon.cli",
            "napari_subtomo_recon.params",
            "napari_subtomo_recon._qt", "napari_subtomo_recon._widget")),
    ("core", ("napari_subtomo_recon.io", "napari_subtomo_recon.job", "napari_subtomo_recon.cli",
              "napari_subtomo_recon._qt", "napari_subtomo_recon._widget")),
    ("job", ("napari_subtomo_recon._qt", "napari_subtomo_recon._widget")),
])  # fmt: skip
def test_layers_import_only_what_lies_before_them(layer, forbidden):
    bad = [
        (p.name, name)
        for p in modules(layer)
        for name, _ in imports(p)
        if name.startswith(forbidden) or name.split(".")[0] in QT
    ]
    assert bad == []


def test_only_qt_modules_import_qt_at_module_level():
    bad = []
    for p in PACKAGE.rglob("*.py"):
        if "_qt" in p.parts or p.name == "_widget.py":
            continue
        bad += [(p.name, n) for n, top in imports(p) if top and n.split(".")[0] in QT]
    assert bad == []


def test_no_function_is_too_complex():
    """Cyclomatic complexity (radon) at most 25, except the line-by-line port of RELION's
    SVD."""
    radon = pytest.importorskip("radon.complexity")
    worst = []
    for p in PACKAGE.rglob("*.py"):
        for block in radon.cc_visit(p.read_text()):
            if block.complexity > 25 and block.name != "_svdcmp":
                worst.append((p.name, block.name, block.complexity))
    assert worst == []
