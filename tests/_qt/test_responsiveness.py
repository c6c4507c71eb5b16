"""napari never freezes: a fresh install (empty Numba cache) docks the widget, opens the
sample data and runs a small job with the live preview, while a 20 ms timer on napari's
event loop measures every gap."""

from __future__ import annotations

import json
import os
import time

import pytest

from napari_subtomo_recon import events as ev

from .conftest import set_params, wait_done

pytestmark = pytest.mark.gui

# Issue #13: no pause over 0.5 s.  On 2 cores with Mesa's llvmpipe one redraw of a 3D map
# takes napari 0.15-0.4 s and adding a 3D layer 0.2-0.3 s; the plugin never lets the two
# fall into one pause (docs/user-guide.md, "Headless use").  Measured on a quiet machine:
# worst 0.40 s over five runs.
MAX_GAP = 0.5  # s


class Gaps:
    """The longest pause of napari's event loop per phase, from a 20 ms QTimer; for each
    long pause, what the GUI thread was doing (its stack, sampled every 20 ms)."""

    def __init__(self) -> None:
        import collections
        import threading

        from qtpy.QtCore import QTimer

        self.phase = "start"
        self.worst: dict[str, tuple[float, float]] = {}
        self.seen: list[tuple[float, str, list[str]]] = []
        self.t0 = self.last = time.perf_counter()
        self.samples: collections.deque = collections.deque(maxlen=500)
        self.main = threading.main_thread().ident
        self.running = True
        threading.Thread(target=self._sample, daemon=True).start()
        self.timer = QTimer()
        self.timer.setInterval(20)
        self.timer.timeout.connect(self.tick)
        self.timer.start()

    def _sample(self) -> None:
        import sys
        import traceback

        while self.running:
            frame = sys._current_frames().get(self.main)
            if frame is not None:
                stack = traceback.extract_stack(frame)[-6:]
                self.samples.append(
                    (time.perf_counter(), " < ".join(f"{f.name}" for f in reversed(stack)))
                )
            time.sleep(0.02)

    def tick(self) -> None:
        import collections

        now = time.perf_counter()
        gap = now - self.last
        if gap > 0.3:
            during = collections.Counter(s for t, s in self.samples if self.last <= t <= now)
            self.seen.append((round(gap, 3), self.phase, [s for s, _ in during.most_common(3)]))
        if gap > self.worst.get(self.phase, (0.0, 0.0))[0]:
            self.worst[self.phase] = (gap, now - self.t0)
        self.last = now

    def enter(self, phase: str) -> None:
        self.tick()
        self.phase = phase


def test_napari_never_freezes_on_a_fresh_install(make_napari_viewer, qtbot, tmp_path, monkeypatch):
    import napari_subtomo_recon._qt.job_widget as jw

    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path / "empty-numba-cache"))
    monkeypatch.setitem(jw._KERNELS, "ready", False)
    # previews every 0.5 s: the small job lasts a few seconds, and each preview is an
    # update of the map in napari, which is what is measured here
    monkeypatch.setattr(jw, "PREVIEW_SECONDS", 0.5)
    viewer = make_napari_viewer(show=True)
    qtbot.wait(500)
    gaps = Gaps()
    times: dict[str, float] = {}

    gaps.enter("dock")
    t = time.perf_counter()
    _, w = viewer.window.add_plugin_dock_widget("napari-subtomo-recon", "Reconstruct particle")
    qtbot.wait(3000)  # a user reads the form before opening the sample data
    compiling = w.status.text()

    gaps.enter("open sample")
    t = time.perf_counter()
    viewer.open_sample("napari-subtomo-recon", "simulated")
    times["open sample returned"] = time.perf_counter() - t
    qtbot.waitUntil(lambda: "ready to run" in w.status.text(), timeout=600_000)
    times["sample data written"] = time.perf_counter() - t
    qtbot.wait(2000)

    gaps.enter("run")
    first_preview: list[float] = []
    w.jobs.progressed.connect(
        lambda u: (
            first_preview.append(time.perf_counter())
            if isinstance(u.event, ev.Preview) and not first_preview
            else None
        )
    )
    set_params(w, threads=2)
    t = time.perf_counter()
    assert w.run(), w.last_error
    out = wait_done(qtbot, w, timeout=900_000)
    assert out.status == "ok", out.message
    times["run (incl. waiting for the kernels)"] = time.perf_counter() - t
    if first_preview:
        times["first preview"] = first_preview[0] - t
    job = out.result.output_dir.name
    qtbot.waitUntil(lambda: f"{job} merged" in viewer.layers, timeout=30_000)
    qtbot.waitUntil(lambda: viewer.layers[f"{job} merged"].visible, timeout=30_000)
    times["final layers in"] = time.perf_counter() - t
    gaps.enter("3 s after")
    qtbot.wait(3000)
    gaps.enter("end")
    gaps.timer.stop()
    gaps.running = False

    report = {
        "worst gap per phase (s)": {k: round(v[0], 3) for k, v in gaps.worst.items()},
        "times (s)": {k: round(v, 2) for k, v in times.items()},
        "status while the kernels compiled": compiling,
        "pauses over 0.3 s (s, phase, the GUI thread's commonest stacks)": gaps.seen,
    }
    print(json.dumps(report, indent=1))
    if os.environ.get("SUBTOMO_GUI_REPORT"):
        with open(os.environ["SUBTOMO_GUI_REPORT"], "w") as fh:
            json.dump(report, fh, indent=1)
    assert "kernels" in compiling  # the user is told what happens on a first start
    assert first_preview, "no live preview during the run"
    bad = {k: v for k, v in gaps.worst.items() if v[0] > MAX_GAP and k != "start"}
    assert not bad, f"napari's event loop stopped: {bad}"
