"""The job's form: one field per option of :class:`~..params.ReconstructParams`.

Built from the fields' :class:`~..params.Spec` alone (label, tab, help, kind, domain):
RELION's tabs, labels in a column, RELION's help texts as wrapped tooltips, our options
that RELION's GUI lacks under "More options".  Numbers are typed as text and checked
against their domain (``1e3`` is 1000; an out-of-range value is refused with a message,
never clamped); paths are elided in the middle, with the whole path as tooltip.
"""

from __future__ import annotations

import html
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from qtpy.QtCore import QObject, Qt, Signal
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QScrollArea,
    QTabWidget,
    QToolButton,
    QVBoxLayout,
    QWidget,
)
from superqt import QCollapsible, QElidingLineEdit

from ..errors import InputError
from ..params import (
    TABS,
    ReconstructParams,
    Spec,
    check_value,
    field_map,
    format_value,
    iter_specs,
    parse_text,
    queue_extras,
)

INVALID_STYLE = "border: 1px solid #ff6b6b;"
MORE = "More options (not in RELION's GUI)"

# RELION's GUI switches these fields on and off
GATES = {
    "use_direct_entries": ("particles", "tomograms", "trajectories"),
    "do_helix": (
        "helical_units", "helical_twist", "helical_rise", "helical_tube_outer_diameter",
        "helical_z_percentage",
    ),
    "do_queue": ("queuename", "qsub", "qsub_extras", "qsubscript", "min_dedicated"),
}  # fmt: skip


def rich_tooltip(text: str) -> str:
    """A tooltip Qt wraps (rich text wraps at ~80 characters; plain text never does)."""
    return "<qt>" + html.escape(text).replace("\n", "<br>") + "</qt>"


def relative_to(path: str | os.PathLike[str], base: str | os.PathLike[str]) -> str:
    """``path`` relative to ``base`` if it lies inside it, else absolute."""
    p = Path(path).resolve()
    try:
        return p.relative_to(Path(base).resolve()).as_posix()
    except ValueError:
        return str(p)


class _Field(QObject):
    """One option's editor; ``text()`` is what the user typed, ``value()`` its meaning."""

    edited = Signal()

    cls: type[Any] = ReconstructParams  # the parameters class (set by the form)

    def __init__(self, name: str, spec: Spec, kind: str) -> None:
        super().__init__()
        self.name, self.spec, self.kind = name, spec, kind
        self.widget: QWidget = QWidget()

    def text(self) -> str:
        raise NotImplementedError

    def set_value(self, value: Any) -> None:
        raise NotImplementedError

    def value(self) -> Any:
        """The value, checked against the domain; InputError names the field."""
        text = self.text()
        label = self.spec.label.rstrip(":?")
        f = field_map(self.cls)[self.name]
        try:
            v = parse_text(f, text)
        except ValueError as e:
            raise InputError(f"{label}: '{text}' is not {e}") from None
        try:
            check_value(self.name, v, text, self.cls)
        except InputError as e:
            raise InputError(f"{label}: '{text}' {str(e).split(': ', 1)[1]}") from None
        return v

    def set_invalid(self, invalid: bool) -> None:
        if invalid != getattr(self, "_invalid", False):  # a style sheet change restyles
            self._invalid = invalid
            self.widget.setStyleSheet(INVALID_STYLE if invalid else "")


class _Check(_Field):
    def __init__(self, name: str, spec: Spec, kind: str) -> None:
        super().__init__(name, spec, kind)
        self.box = QCheckBox()
        self.widget = self.box
        self.box.toggled.connect(lambda *_: self.edited.emit())

    def text(self) -> str:
        return "Yes" if self.box.isChecked() else "No"

    def set_value(self, value: Any) -> None:
        self.box.setChecked(bool(value))


class _Line(_Field):
    """Text and numbers."""

    def __init__(self, name: str, spec: Spec, kind: str) -> None:
        super().__init__(name, spec, kind)
        self.line = QLineEdit()
        self.widget = self.line
        if kind in ("int", "float"):
            self.line.setMaximumWidth(140)
        self.line.textChanged.connect(lambda *_: self.edited.emit())

    def text(self) -> str:
        return self.line.text()

    def set_value(self, value: Any) -> None:
        self.line.setText(format_value(value))


class _Choice(_Field):
    def __init__(self, name: str, spec: Spec, kind: str) -> None:
        super().__init__(name, spec, kind)
        self.combo = QComboBox()
        self.combo.addItems(list(spec.domain.choices))
        self.widget = self.combo
        self.combo.currentTextChanged.connect(lambda *_: self.edited.emit())

    def text(self) -> str:
        return str(self.combo.currentText())

    def set_value(self, value: Any) -> None:
        self.combo.setCurrentText(str(value))


class _Path(_Field):
    """A path elided in the middle (whole path as tooltip) and a browse button; the value
    is the text as typed (RELION keeps paths relative to the project folder)."""

    def __init__(self, name: str, spec: Spec, kind: str, base_dir: Callable[[], str]) -> None:
        super().__init__(name, spec, kind)
        self.base_dir = base_dir
        self.line = QElidingLineEdit()
        self.line.setElideMode(Qt.TextElideMode.ElideMiddle)
        self.button = QToolButton()
        self.button.setText("…")
        self.button.setToolTip("Browse")
        box = QWidget()
        row = QHBoxLayout(box)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.line, 1)
        row.addWidget(self.button)
        self.widget = box
        self._shown = ""
        self.line.textChanged.connect(self._changed)
        self.button.clicked.connect(self._browse)

    def _changed(self, *_: Any) -> None:
        # the eliding line edit sets its (elided) text again on every resize and focus
        # change: only a new path is an edit
        if self.text() == self._shown:
            return
        self._shown = self.text()
        self.line.setToolTip(self._shown)
        self.edited.emit()

    def text(self) -> str:
        return str(self.line.text()).strip()

    def set_value(self, value: Any) -> None:
        self.line.setText("" if value is None else str(value))
        self._shown = self.text()
        self.line.setToolTip(self._shown)

    def _browse(self) -> None:
        base = Path(self.base_dir() or os.getcwd())
        start = str(base / self.text()) if self.text() else str(base)
        if self.kind == "dir":
            chosen = QFileDialog.getExistingDirectory(self.widget, self.spec.label, start)
            if chosen:
                self.set_value(str(Path(chosen).resolve()))  # (emits edited if new)
            return
        chosen, _ = QFileDialog.getOpenFileName(
            self.widget, self.spec.label, start, self.spec.pattern or ""
        )
        if chosen:
            self.set_value(relative_to(chosen, base))


class _Extras(_Field):
    """RELION_QSUB_EXTRA1..N: one line each, as the environment defines them."""

    def __init__(self, name: str, spec: Spec, kind: str, env: Mapping[str, str]) -> None:
        super().__init__(name, spec, kind)
        self.lines: dict[str, QLineEdit] = {}
        self.labels: dict[str, str] = {}
        for key, extra in queue_extras(env).items():
            line = QLineEdit(extra.default)
            line.setToolTip(rich_tooltip(extra.help))
            line.textChanged.connect(lambda *_: self.edited.emit())
            self.lines[key] = line
            self.labels[key] = extra.label

    def text(self) -> str:
        return ""

    def value(self) -> dict[str, str]:
        return {k: str(w.text()) for k, w in self.lines.items()}

    def set_value(self, value: Any) -> None:
        for k, v in dict(value or {}).items():
            if k in self.lines:
                self.lines[k].setText(str(v))

    def set_invalid(self, invalid: bool) -> None:
        pass  # free text


class ParamsForm(QWidget):
    """RELION's tabs with a field per form option of :class:`ReconstructParams`."""

    changed = Signal(str)  # the option's name

    def __init__(
        self,
        base_dir: Callable[[], str],
        env: Mapping[str, str] | None = None,
        parent: QWidget | None = None,
        cls: type[Any] = ReconstructParams,
    ) -> None:
        super().__init__(parent)
        env = os.environ if env is None else env
        self.cls = cls
        self.fields: dict[str, _Field] = {}
        self._more_boxes: dict[str, QCollapsible] = {}
        self.labels: dict[str, QLabel] = {}
        self.tabs = QTabWidget()
        layouts: dict[str, tuple[QFormLayout, QFormLayout]] = {}
        for tab in TABS:
            page = QWidget()
            column = QVBoxLayout(page)
            main, more = QFormLayout(), QFormLayout()
            for form in (main, more):
                form.setLabelAlignment(Qt.AlignmentFlag.AlignLeft)
                form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.ExpandingFieldsGrow)
            column.addLayout(main)
            layouts[tab] = (main, more)
            box = QCollapsible(MORE)
            inner = QWidget()
            inner.setLayout(more)
            box.addWidget(inner)
            self._more_boxes[tab] = box
            column.addWidget(box)
            column.addStretch(1)
            scroll = QScrollArea()
            scroll.setWidgetResizable(True)
            scroll.setWidget(page)
            self.tabs.addTab(scroll, tab)
        for name, spec, kind in iter_specs(cls):
            if spec.tab is None:
                continue
            field = self._make(name, spec, kind, base_dir, env)
            field.cls = cls
            self.fields[name] = field
            main, more = layouts[spec.tab]
            target = more if spec.advanced else main
            if isinstance(field, _Extras):
                for key, line in field.lines.items():
                    target.addRow(QLabel(field.labels[key]), line)
            else:
                label = QLabel(spec.label)
                label.setToolTip(rich_tooltip(spec.help))
                field.widget.setToolTip(rich_tooltip(spec.help))
                self.labels[name] = label
                target.addRow(label, field.widget)
            field.edited.connect(lambda n=name: self._edited(n))
        for tab, box in self._more_boxes.items():
            if layouts[tab][1].rowCount() == 0:
                box.hide()
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.tabs)
        self._updating = False
        self.set_params(cls.for_gui(env))

    @staticmethod
    def _make(
        name: str, spec: Spec, kind: str, base_dir: Callable[[], str], env: Mapping[str, str]
    ) -> _Field:
        if kind == "bool":
            return _Check(name, spec, kind)
        if kind == "choice":
            return _Choice(name, spec, kind)
        if kind in ("file", "dir"):
            return _Path(name, spec, kind, base_dir)
        if kind == "extras":
            return _Extras(name, spec, kind, env)
        return _Line(name, spec, kind)

    # ------------------------------------------------------------------ values
    def params(self, base: ReconstructParams | None = None) -> ReconstructParams:
        """The parameters shown; InputError (with the field's label) for a bad entry."""
        values = {name: f.value() for name, f in self.fields.items()}
        return (base or self.cls()).replace(**values)

    def problem(self) -> str | None:
        """The first field whose text is not a valid value (and mark every bad field)."""
        first = None
        for f in self.fields.values():
            try:
                f.value()
            except InputError as e:
                f.set_invalid(True)
                first = first or str(e)
            else:
                f.set_invalid(False)
        return first

    def set_params(self, p: ReconstructParams) -> None:
        self._updating = True
        try:
            for name, f in self.fields.items():
                f.set_value(getattr(p, name))
        finally:
            self._updating = False
        self._apply_gates()

    def set_value(self, name: str, value: Any) -> None:
        self._updating = True
        try:
            self.fields[name].set_value(value)
        finally:
            self._updating = False
        self._apply_gates()

    def text(self, name: str) -> str:
        return self.fields[name].text()

    def _edited(self, name: str) -> None:
        if name in GATES:
            self._apply_gates()
        if not self._updating:
            self.changed.emit(name)

    def _apply_gates(self) -> None:
        for gate, names in GATES.items():
            on = self.fields[gate].text() == "Yes"
            for n in names:
                f = self.fields[n]
                if isinstance(f, _Extras):
                    for line in f.lines.values():
                        line.setEnabled(on)
                else:
                    f.widget.setEnabled(on)
