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
from typing import Any

import numpy as np

from ..errors import InputError
from ..io.atomic import fault, remove_quietly
from ..io.checkpoint import has_checkpoints
from ..params import ReconstructParams
from .inputs import Inputs, input_files


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
    """Every file the job writes into its output folder (the group of :func:`write_outputs`)."""
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


def check_maps(maps: dict[str, dict[str, Any]]) -> None:
    """A map with NaN or infinite voxels is never written: say so instead."""
    for tag, m in maps.items():
        bad = int(np.count_nonzero(~np.isfinite(m["final"])))
        if bad:
            raise InputError(
                f"the {tag} map has {bad} non-finite voxels (NaN or infinity); nothing was "
                "written: check the numeric values of the inputs"
            )


def write_outputs(
    maps: dict[str, dict[str, Any]], params: ReconstructParams, inp: Inputs, out_dir: Path,
    voxel_size: float, command: str | None = None,
) -> dict[str, Path]:  # fmt: skip
    """Write every output under a temporary name, then rename them all into place."""
    from ..io.atomic import temp_name
    from ..io.optimisation_set import OptimisationSet, optimisation_set_blocks
    from ..io.star import write_star
    from .relion import program_note_text

    prepare_output_dir(out_dir)
    files: dict[str, Path] = {}
    staged: list[tuple[Path, Path]] = []

    def stage(name: str, final: Path, writer: Callable[[Path], object]) -> None:
        tmp = temp_name(final)
        staged.append((tmp, final))  # before writing: a failed write is removed too
        try:
            writer(tmp)
        except OSError as e:
            raise fault(final, e) from None
        files[name] = final

    try:
        for tag, m in maps.items():
            for key, name in (
                ("data", f"data_{tag}"), ("weight", f"weight_{tag}"),
                ("full", f"{tag}_full"), ("final", tag),
            ):  # fmt: skip
                if m[key] is not None:
                    stage(name, out_dir / f"{name}.mrc", _map_writer(m[key], voxel_size))
        opt = inp.optimisation_set
        ref = OptimisationSet(
            particles=opt.particles, tomograms=opt.tomograms, trajectories=opt.trajectories
        )
        written = Path(params.output_dir)  # as the user wrote it: relative to the project
        if "half1" in maps:
            ref.reference1 = str(written / "half1.mrc")
            ref.reference2 = str(written / "half2.mrc")
        else:
            ref.reference1 = str(written / "merged.mrc")
        stage(
            "optimisation_set", out_dir / "optimisation_set.star",
            lambda t: write_star(optimisation_set_blocks(ref), t, atomic=False),
        )  # fmt: skip
        if not params.pipeline_control:  # RELION's pipeliner (or the widget) writes it then
            text = program_note_text(command or "")
            stage("note", out_dir / "note.txt", lambda t: Path(t).write_text(text))
        commit(staged)
    finally:
        for tmp, _ in staged:
            remove_quietly(tmp)
    return files


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


def _map_writer(data: np.ndarray, voxel_size: float) -> Callable[[Path], object]:
    from ..io.mrc import write_map

    return lambda path: write_map(path, data, voxel_size, atomic=False)


def _block_signals() -> set[int | signal.Signals] | None:
    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})


def _unblock_signals(old: set[int | signal.Signals] | None) -> None:
    if old is not None:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)
