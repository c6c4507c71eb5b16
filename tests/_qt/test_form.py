"""The widget's form: RELION's tabs, labels and help; values typed as a user types them."""

from __future__ import annotations

import dataclasses

import pytest

from napari_subtomo_recon.params import FIELDS, ReconstructParams, spec_of

from .conftest import set_params

pytestmark = pytest.mark.gui


def test_tabs_fields_and_defaults(qtbot, tmp_path):
    from napari.components import ViewerModel

    from napari_subtomo_recon._widget import ReconstructParticleWidget

    w = ReconstructParticleWidget(ViewerModel())
    qtbot.addWidget(w)
    set_params(w, project_dir=str(tmp_path))
    tabs = w.form.tabs
    assert [tabs.tabText(i) for i in range(tabs.count())] == ["I/O", "Average", "Helix", "Running"]
    for name in w.form.fields:
        s = spec_of(FIELDS[name])
        assert s.tab is not None, name
        if name in w.form.labels:
            assert w.form.labels[name].text() == s.label
            assert w.form.labels[name].toolTip().startswith("<qt>"), name  # wrapped
    # labels in one column, fields in the next (per tab and per "More options" box)
    w.show()
    for i in range(tabs.count()):
        tabs.setCurrentIndex(i)
        qtbot.wait(10)
        columns: dict = {}
        for name, label in w.form.labels.items():
            field = w.form.fields[name].widget
            if label.isVisibleTo(w) and label.parentWidget() is field.parentWidget():
                columns.setdefault(id(label.parentWidget()), set()).add((label.x(), field.x()))
        assert columns and all(len(c) == 1 for c in columns.values()), columns
    p = w.params()
    gui = ReconstructParams.for_gui()
    assert (p.binning, p.box_size, p.crop_size, p.snr) == (1.0, 128, -1, 0.0)
    assert (p.symmetry, p.helical_twist, p.helical_rise) == ("C1", -1.0, 4.75)
    assert p.threads == gui.threads and p.output_dir == "Reconstruct/job001/"
    assert p.project_dir == str(tmp_path)
    # RELION greys out what the switches do not activate
    fields = w.form.fields
    assert not fields["particles"].widget.isEnabled()
    assert not fields["helical_rise"].widget.isEnabled()
    assert not fields["qsubscript"].widget.isEnabled()
    set_params(w, use_direct_entries=True, do_helix=True, do_queue=True)
    assert fields["particles"].widget.isEnabled() and fields["helical_rise"].widget.isEnabled()
    assert fields["qsubscript"].widget.isEnabled()
    (tmp_path / "p2" / "Extract" / "job007").mkdir(parents=True)
    set_params(w, project_dir=str(tmp_path / "p2"))
    assert w.params().output_dir == "Reconstruct/job008/"
    # our options that RELION's GUI lacks are under "More options"
    assert "whiten" in fields and "exact" in fields and "memory_gb" in fields


def test_help_texts_are_relions_and_wrap(widget):
    from qtpy.QtWidgets import QLabel

    tip = widget.form.labels["symmetry"].toolTip()
    assert "I1: No-Crowther 222" in tip and tip.startswith("<qt>")
    label = QLabel(tip)  # what Qt's tooltip does with rich text: wrap at ~80 characters
    label.setWordWrap(True)
    assert label.sizeHint().width() < 700


def test_numbers_as_typed_and_never_clamped(widget):
    f = widget.form.fields["box_size"]
    f.line.setText("1e3")  # what a user may type: 1000
    assert widget.params().box_size == 1000
    f.line.setText("2048")  # beyond RELION's slider, as RELION's GUI accepts
    assert widget.params().box_size == 2048
    set_params(widget, crop_size=-1)
    for typed, message in (
        ("33", "Box size (binned pix): '33' must be even"),
        ("12.5", "Box size (binned pix): '12.5' is not an integer"),
        ("big", "Box size (binned pix): 'big' is not an integer"),
    ):
        f.line.setText(typed)
        widget._refresh()
        assert message in widget.message.text(), typed
        assert f.line.styleSheet()  # marked
        assert not widget.run() and message in widget.last_error
    f.line.setText("64")
    widget._refresh()
    assert widget.message.text() == "" and not f.line.styleSheet()
    threads = widget.form.fields["threads"]
    threads.line.setText("64")  # more than RELION_THREAD_MAX's default: accepted
    assert widget.params().threads == 64
    widget.form.fields["taper"].line.setText("nan")
    widget._refresh()
    assert "Taper (pix): 'nan' must be a finite number" in widget.message.text()


def test_paths_are_elided_in_the_middle(widget):
    from qtpy.QtCore import Qt

    f = widget.form.fields["project_dir"]
    long = "/very/long/path/" + "x" * 300 + "/project"
    f.set_value(long)
    assert f.line.elideMode() == Qt.TextElideMode.ElideMiddle
    assert f.line.toolTip() == long and f.text() == long
    shown = f.line.displayText() if not f.line.hasFocus() else f.line.text()
    assert "…" in shown and shown.endswith("project")


def test_symmetry_is_validated_while_typing(widget):
    sym = widget.form.fields["symmetry"]
    for typed in ("C", "C6x", "Q7"):
        sym.line.clear()
        for ch in typed:  # as typed, one key at a time
            sym.line.insert(ch)
        assert "Symmetry" in widget.message.text(), typed
    sym.line.setText("C6")
    assert widget.message.text() == ""
    assert "--sym C6" in widget.command_view.toPlainText()


def test_equivalent_command_line_is_shown(widget):
    set_params(widget, crop_size=24, snr=0.00005, memory_gb=2, whiten=True, other_args="--taper 4")
    out = widget.params().output_dir
    assert widget.command_view.toPlainText() == (
        f"subtomo-recon --i optimisation_set.star --theme classic --o {out} --b 32 --crop 24 "
        f"--bin 2 --SNR 5e-05 --j 2 --j_out 2 --j_in 1 --sym C1 --whiten --mem 2 --taper 4 "
        f"--pipeline_control {out}"
    )


def test_a_new_option_appears_in_the_form(qtbot, tmp_path):
    from napari_subtomo_recon._qt.form import ParamsForm
    from napari_subtomo_recon.params import Domain, Spec, option

    @dataclasses.dataclass
    class WithDummy(ReconstructParams):
        dummy_level: float = option(0.5, Spec(
            "Dummy level:", "A dummy option for this test.", flag="--dummy_level",
            tab="Average", advanced=True, checkpoint=True, domain=Domain(min=0.0, max=1.0),
        ))  # fmt: skip

    form = ParamsForm(base_dir=lambda: str(tmp_path), cls=WithDummy)
    qtbot.addWidget(form)
    assert form.labels["dummy_level"].text() == "Dummy level:"
    assert form.params().dummy_level == 0.5
    form.fields["dummy_level"].line.setText("0.25")
    assert form.params().dummy_level == 0.25
    form.fields["dummy_level"].line.setText("3")
    assert form.problem() == "Dummy level: '3' must be in [0, 1]"
