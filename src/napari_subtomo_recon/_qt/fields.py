"""magicgui fields for RELION job options (labels, defaults, ranges and help from io.jobstar)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from magicgui.widgets import CheckBox, FileEdit, FloatSpinBox, LineEdit, SpinBox, Widget

from ..io.jobstar import JobOption


class RelativePathEdit(FileEdit):
    """A file field whose value is the text as typed (RELION keeps project-relative paths).

    magicgui's FileEdit makes every value absolute, which would break RELION's
    convention; the browse button here stores a path relative to ``base_dir()`` when
    the chosen file lies inside it.
    """

    def __init__(self, base_dir: Callable[[], str] | None = None, **kwargs):
        self._base_dir = base_dir or os.getcwd
        super().__init__(**kwargs)

    def get_value(self) -> str:  # type: ignore[override]
        return self.line_edit.value.strip()

    def set_value(self, value) -> None:  # type: ignore[override]
        self.line_edit.value = "" if value is None else str(value)
        self.line_edit.native.setCursorPosition(0)  # show where the path starts

    def _on_choose_clicked(self) -> None:
        base = Path(self._base_dir() or os.getcwd())
        current = self.value
        start = base / current if current else base
        result = self._show_file_dialog(
            self.mode, caption=self._btn_text, start_path=os.fspath(start), filter=self.filter
        )
        if result:
            self.value = relative_to(result, base)


def relative_to(path, base) -> str:
    """``path`` relative to ``base`` if it lies inside it, else absolute."""
    p = Path(path).resolve()
    try:
        return p.relative_to(Path(base).resolve()).as_posix()
    except ValueError:
        return str(p)


def _decimals(step: float | None) -> int:
    if not step:
        return 2
    s = f"{step:.10f}".rstrip("0")
    return max(2, len(s.split(".")[1]) + 1) if "." in s else 2


def make_field(opt: JobOption, base_dir: Callable[[], str] | None = None) -> Widget:
    """The magicgui widget for one job option; ``name`` is RELION's variable name."""
    common = {"name": opt.name, "label": opt.label.rstrip(), "tooltip": opt.help}
    if opt.kind == "bool":
        return CheckBox(value=bool(opt.default), **common)
    if opt.kind == "int":
        return SpinBox(
            value=int(opt.default), min=int(opt.min), max=int(opt.max), step=int(opt.step),
            **common,
        )  # fmt: skip
    if opt.kind == "float":
        w = FloatSpinBox(
            value=float(opt.default), min=opt.min, max=opt.max, step=opt.step, **common
        )
        w.native.setDecimals(_decimals(opt.step))
        return w
    if opt.kind == "file":
        return RelativePathEdit(
            base_dir=base_dir, mode="r", filter=opt.pattern or None, value=opt.default, **common
        )
    if opt.kind == "dir":
        w = FileEdit(mode="d", value=opt.default or None, nullable=True, **common)
        return w
    return LineEdit(value=str(opt.default), **common)


def set_field(widget: Widget, opt: JobOption, value) -> str | None:
    """Set a field; widens a spin box that cannot hold the value (RELION's ranges only
    bound its sliders) and says so."""
    note = None
    if opt.kind in ("int", "float"):
        v = float(value)
        if v < widget.min or v > widget.max:
            note = f"{opt.name} = {value} is outside RELION's slider range {opt.min}..{opt.max}"
            widget.min = min(widget.min, v)
            widget.max = max(widget.max, v)
        widget.value = int(v) if opt.kind == "int" else v
    elif opt.kind == "bool":
        widget.value = bool(value)
    elif opt.kind == "dir":
        widget.value = str(value) if value else None
    else:
        widget.value = "" if value is None else str(value)
    return note


def get_field(widget: Widget, opt: JobOption):
    v = widget.value
    if opt.kind == "dir":
        return "" if v is None else str(v)
    return v
