"""The job's last stage: every output file written as one group, or none.

Each file is written under a temporary name first; the renames follow when all are
written, with SIGTERM/SIGINT held, so the folder keeps its previous files until a few
microseconds before the end.  An error while writing leaves no new file at all; a rename
that fails puts the previous files back (:func:`commit`).
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..errors import InputError
from ..io.atomic import fault, remove_quietly
from ..io.checkpoint import has_checkpoints
from ..params import ReconstructParams
from .inputs import Inputs, input_files

if TYPE_CHECKING:
    from ..io.mrc import PlaneSource


def check_output_dir(out_dir: Path) -> None:
    """Fail before any work if the output folder cannot be created or written."""
    p = out_dir.resolve()
    while not p.exists():
        p = p.parent
    if not p.is_dir():
        raise InputError(f"{out_dir}: {p} is a file, not a folder")
    if not os.access(p, os.W_OK | os.X_OK):
        raise InputError(f"{out_dir}: the output directory is not writable ({p})")


def prepare_output_dir(out_dir: Path) -> None:
    """Create the output folder (and temp/) before any heavy work, or fail clearly."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"{out_dir}: cannot create the output directory ({e.strerror})") from None
    if not os.access(out_dir, os.W_OK):
        raise InputError(f"{out_dir}: the output directory is not writable")


def output_names(params: ReconstructParams, half_sets: bool) -> list[str]:
    """Every file the job writes into its output folder (an :class:`OutputGroup`)."""
    names = []
    for tag in ("half1", "half2", "merged") if half_sets else ("merged",):
        names += [f"data_{tag}.mrc", f"weight_{tag}.mrc", f"{tag}.mrc"]
        if params.crops:
            names.append(f"{tag}_full.mrc")
    names.append("optimisation_set.star")
    if not params.pipeline_control:
        names.append("note.txt")
    return names


def input_paths(params: ReconstructParams, inp: Inputs, root: str | None) -> dict[Path, str]:
    """Every input file (:func:`~.inputs.input_files`), resolved, for :func:`check_outputs`."""
    files = input_files(params, inp, root)
    return {Path(f).resolve(): what for f, what in files.items()}


def check_outputs(out_dir: Path, names: list[str], inputs: dict[Path, str]) -> None:
    """Before any work: no output may replace an input, and every output name must be
    free for a file (a folder of that name would stop the job at its very end)."""
    for name in names:
        path = out_dir / name
        resolved = path.resolve()
        if resolved in inputs:
            raise InputError(
                f"{out_dir}: writing {name} there would replace {inputs[resolved]}; "
                "choose another output folder (--o)"
            )
        if path.is_dir():
            raise InputError(f"{path}: is a folder; the job writes a file of that name there")
    temp = out_dir / "temp"
    if temp.exists() and not temp.is_dir():
        raise InputError(f"{temp}: is a file; the job keeps its checkpoints in a folder there")


def finished(out_dir: Path, names: list[str]) -> bool:
    """Every output is there and no checkpoint waits: a finished job."""
    if has_checkpoints(out_dir):
        return False
    return all((out_dir / n).is_file() for n in names if n != "note.txt")


_MAP_NAMES = {"data": "data_{}", "weight": "weight_{}", "out": "{}_full", "final": "{}"}


class OutputGroup:
    """The job's output files, each written under a temporary name as soon as it exists
    and renamed into place with all the others by :meth:`commit` (or removed, on any
    error or cancel, when the ``with`` block ends): a map is dropped once written."""

    def __init__(self, params: ReconstructParams, out_dir: Path, voxel_size: float) -> None:
        prepare_output_dir(out_dir)
        self.params, self.out_dir, self.voxel_size = params, out_dir, voxel_size
        self.staged: list[tuple[Path, Path]] = []
        self.files: dict[str, Path] = {}

    def __enter__(self) -> OutputGroup:
        return self

    def __exit__(self, *exc: object) -> None:
        for tmp, _ in self.staged:  # after commit() they are gone already
            remove_quietly(tmp)

    def stage(self, name: str, final: Path, writer: Callable[[Path], object]) -> None:
        from ..io.atomic import temp_name

        tmp = temp_name(final)
        self.staged.append((tmp, final))  # before writing: a failed write is removed too
        try:
            writer(tmp)
        except OSError as e:
            raise fault(final, e) from None
        self.files[name] = final

    def add_map(self, tag: str, kind: str, vol: np.ndarray | PlaneSource) -> None:
        """Stage one map of :func:`~.finalise.finalise_steps` (``out`` only when cropping,
        as ``<tag>_full``).  A final map with NaN or infinite voxels stops the job."""
        if kind == "final":
            assert isinstance(vol, np.ndarray)  # (only weights come as planes)
            bad = int(np.count_nonzero(~np.isfinite(vol)))
            if bad:
                raise InputError(
                    f"the {tag} map has {bad} non-finite voxels (NaN or infinity); nothing "
                    "was written: check the numeric values of the inputs"
                )
        if kind == "out" and not self.params.crops:
            return
        name = _MAP_NAMES[kind].format(tag)
        self.stage(name, self.out_dir / f"{name}.mrc", _map_writer(vol, self.voxel_size))

    def commit(self, inp: Inputs, half_sets: bool, command: str | None = None) -> dict[str, Path]:
        """Stage the optimisation set and note, then rename every file into place."""
        from ..io.optimisation_set import OptimisationSet, optimisation_set_blocks
        from ..io.star import write_star
        from .relion import program_note_text

        opt = inp.optimisation_set
        ref = OptimisationSet(
            particles=opt.particles, tomograms=opt.tomograms, trajectories=opt.trajectories
        )
        written = Path(self.params.output_dir)  # as the user wrote it: relative to the project
        if half_sets:
            ref.reference1 = str(written / "half1.mrc")
            ref.reference2 = str(written / "half2.mrc")
        else:
            ref.reference1 = str(written / "merged.mrc")
        self.stage(
            "optimisation_set", self.out_dir / "optimisation_set.star",
            lambda t: write_star(optimisation_set_blocks(ref), t, atomic=False),
        )  # fmt: skip
        if not self.params.pipeline_control:  # RELION's pipeliner (or the widget) writes it
            text = program_note_text(command or "")
            self.stage("note", self.out_dir / "note.txt", lambda t: Path(t).write_text(text))
        commit(self.staged)
        order = [Path(n).stem for n in output_names(self.params, half_sets)]
        return {k: self.files[k] for k in order if k in self.files}


def commit(staged: list[tuple[Path, Path]]) -> None:
    """Rename every (temporary, final) pair into place, or none of them.

    The previous files stay reachable under ``.<name>.old-<pid>`` (a hard link, so the
    final name is never missing) until the last rename succeeded; if one fails, the
    files renamed so far are put back.  SIGTERM/SIGINT are held meanwhile.
    """
    blocked = _block_signals()
    done: list[tuple[Path, Path | None]] = []  # (final, its previous file's backup)
    current = staged[0][1] if staged else Path()
    try:
        for tmp, current in staged:
            done.append((current, _keep_previous(current)))
            os.replace(tmp, current)
    except OSError as e:
        _roll_back(done)
        raise fault(current, e) from None
    finally:
        _unblock_signals(blocked)
        for _, backup in done:
            if backup is not None:
                remove_quietly(backup)


def _roll_back(done: list[tuple[Path, Path | None]]) -> None:
    """Put the previous files back (and remove new ones that had none), newest first."""
    for final, backup in reversed(done):
        try:
            if backup is not None:
                os.replace(backup, final)
            elif final.is_file():
                final.unlink()
        except OSError:
            pass  # the failed rename is the error to report


def _keep_previous(final: Path) -> Path | None:
    """A backup of ``final`` if it is a file (a hard link, or a renamed copy), else None."""
    if not final.is_file():
        return None
    backup = final.with_name(f".{final.stem}.old-{os.getpid()}{final.suffix}")
    remove_quietly(backup)
    try:
        os.link(final, backup)
    except OSError:  # no hard links on this file system: move it aside instead
        os.replace(final, backup)
    return backup


def _map_writer(data: np.ndarray | PlaneSource, voxel_size: float) -> Callable[[Path], object]:
    from ..io.mrc import write_map

    return lambda path: write_map(path, data, voxel_size, atomic=False)


def _block_signals() -> set[int | signal.Signals] | None:
    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})


def _unblock_signals(old: set[int | signal.Signals] | None) -> None:
    if old is not None:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)
