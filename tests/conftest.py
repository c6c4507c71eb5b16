"""Skip GUI / MPI tests where they cannot run, unless CI requires them.

Tests marked ``gui`` need Qt, napari, pytest-qt and a display (pytest-xvfb provides
one); tests marked ``mpi`` need ``mpirun`` and mpi4py.  With SUBTOMO_REQUIRE_GUI=1 /
SUBTOMO_REQUIRE_MPI=1 (set by .ci/run) a missing requirement fails the test instead,
so CI cannot pass by skipping them.
"""

from __future__ import annotations

import importlib.util
import os
import shutil

import pytest


def _missing_gui() -> str | None:
    for mod in ("qtpy", "napari", "magicgui", "pytestqt"):
        if importlib.util.find_spec(mod) is None:
            return f"{mod} is not installed"
    if not any(importlib.util.find_spec(m) for m in ("PyQt6", "PyQt5", "PySide6", "PySide2")):
        return "no Qt binding is installed"
    if os.environ.get("QT_QPA_PLATFORM", "") not in ("", "xcb", "wayland"):
        return None  # offscreen and friends need no display
    if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return "no display (install pytest-xvfb and Xvfb, or set DISPLAY)"
    return None


def _missing_mpi() -> str | None:
    if shutil.which(os.environ.get("RELION_MPIRUN", "mpirun").split()[0]) is None:
        return "mpirun is not on the PATH"
    if importlib.util.find_spec("mpi4py") is None:
        return "mpi4py is not installed"
    return None


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    for marker, check, env in (
        ("gui", _missing_gui, "SUBTOMO_REQUIRE_GUI"),
        ("mpi", _missing_mpi, "SUBTOMO_REQUIRE_MPI"),
    ):
        if item.get_closest_marker(marker) is None:
            continue
        why = check()
        if why is None:
            continue
        if os.environ.get(env) == "1":
            pytest.fail(f"{env}=1 but {marker} tests cannot run: {why}", pytrace=False)
        pytest.skip(f"{marker}: {why}")
