"""Environment faults at every write site: one line naming the file and the cause, exit 4,
the previous maps intact, no temporary or orphan file, inputs unchanged, and the job
resumable with --only_do_unfinished once the cause is gone.

The faults are injected by patching the writers (no root needed): ENOSPC, EACCES and
EISDIR as the kernel reports them, and numpy's errno-less "N requested and M written"
that a full disk gives while saving a checkpoint.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import starfile

from napari_subtomo_recon.cli import main
from napari_subtomo_recon.io import mrc

from .test_safety import FLAGS, digest, project  # noqa: F401 - the fixture

FAULTS = {
    "ENOSPC": lambda path: OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path)),
    "EACCES": lambda path: PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path)),
    "EISDIR": lambda path: IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path)),
}
CAUSE = {k: os.strerror(getattr(errno, k)) for k in FAULTS}


def failing(real: Callable[..., object], fault: str, when: Callable[[str], bool]):
    """``real``, except that it raises ``fault`` for a path that ``when`` picks."""

    def writer(path, *args, **kwargs):
        if when(str(path)):
            raise FAULTS[fault](path)
        return real(path, *args, **kwargs)

    return writer


def ends_cleanly(capsys, job: Path) -> str:
    """One error line, the last one (progress lines come before it); no temporary, backup
    or lock file anywhere in the job folder."""
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if "error" in line.lower() or "Traceback" in line]
    assert errors == err[-1:] and err[-1].startswith("subtomo-recon: error: "), err
    left = [p.name for p in job.rglob("*") if ".tmp-" in p.name or ".old-" in p.name]
    assert not left, left
    assert not (job / ".subtomo-recon.lock").exists()
    return err[-1]


def outputs(job: Path) -> dict[str, str]:
    """Digests of the job's outputs (temp/ holds the checkpoints a failed job keeps to be
    resumed)."""
    return {k: v for k, v in digest(job).items() if not k.startswith("temp/")}


def maps_of(job: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(job.glob("*.mrc"))}


def same_maps(a: dict[str, bytes], b: dict[str, bytes]) -> None:
    """Maps equal voxel for voxel (the headers hold the time they were written)."""
    assert a.keys() == b.keys()
    for name in a:
        x = np.frombuffer(a[name][1024:], np.float32)
        y = np.frombuffer(b[name][1024:], np.float32)
        np.testing.assert_array_equal(x, y, err_msg=name)


@pytest.fixture
def finished_job(project, capsys):  # noqa: F811
    """The project after one successful run into job/: its maps are the previous ones."""
    assert main([*FLAGS, "--o", "job/"]) == 0
    capsys.readouterr()
    return project


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_a_map_that_cannot_be_written(finished_job, capsys, monkeypatch, fault):
    job = finished_job / "job"
    before, inputs = outputs(job), digest(finished_job / "tilt_series")
    real = mrc.write_map
    monkeypatch.setattr(
        mrc, "write_map", failing(real, fault, lambda p: Path(p).name.startswith(".half2."))
    )
    assert main([*FLAGS, "--o", "job/", "--taper", "3"]) == 4
    msg = ends_cleanly(capsys, job)
    assert f"job/half2.mrc: cannot write ({CAUSE[fault]})" in msg, msg
    assert outputs(job) == before  # the previous maps, untouched
    assert digest(finished_job / "tilt_series") == inputs
    monkeypatch.setattr(mrc, "write_map", real)
    assert main([*FLAGS, "--o", "job/"]) == 0


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_the_star_file_or_the_note_cannot_be_written(finished_job, capsys, monkeypatch, fault):
    job = finished_job / "job"
    before = outputs(job)
    real_star = starfile.write
    monkeypatch.setattr(starfile, "write", failing(real_star, fault, lambda p: True))
    assert main([*FLAGS, "--o", "job/"]) == 4
    assert f"job/optimisation_set.star: cannot write ({CAUSE[fault]})" in ends_cleanly(capsys, job)
    assert outputs(job) == before
    monkeypatch.setattr(starfile, "write", real_star)

    real_text = Path.write_text

    def write_text(self, *args, **kwargs):
        if "note" in self.name:
            raise FAULTS[fault](self)
        return real_text(self, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", write_text)
    assert main([*FLAGS, "--o", "job/"]) == 4
    assert f"job/note.txt: cannot write ({CAUSE[fault]})" in ends_cleanly(capsys, job)
    assert outputs(job) == before


def test_a_rename_that_fails_puts_the_previous_maps_back(finished_job, capsys, monkeypatch):
    job = finished_job / "job"
    before = outputs(job)
    real, calls = os.replace, []

    def replace(src, dst):
        if not Path(dst).name.startswith("."):  # a final rename, not a temporary file's
            calls.append(dst)
        if len(calls) == 5 and calls[-1] == dst:  # four new maps are in place now
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(dst))
        return real(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    # another taper: new maps that differ from the previous ones
    assert main([*FLAGS, "--o", "job/", "--taper", "3"]) == 4
    msg = ends_cleanly(capsys, job)
    assert f"job/{Path(calls[4]).name}: cannot write" in msg, msg
    assert "Read-only file system" in msg
    assert outputs(job) == before  # every map is the previous one again


@pytest.fixture(scope="module")
def three_tomograms(tmp_path_factory):
    from napari_subtomo_recon.simulate import simulate

    return simulate(
        tmp_path_factory.mktemp("faults"), n_tomograms=3, particles_per_tomogram=12, seed=4
    ).root


@pytest.mark.parametrize(
    ("fault", "call"), [("ENOSPC", 3), ("numpy", 4), ("EACCES", 4), ("EISDIR", 3)]
)
def test_a_checkpoint_that_cannot_be_saved(three_tomograms, capsys, monkeypatch, fault, call):
    """A full disk while saving the second checkpoint (its first volume, or its second
    after the first was renamed into place): the first checkpoint stays the valid one, no
    orphan volume, and the resumed job ends with the uninterrupted maps."""
    monkeypatch.chdir(three_tomograms)
    flags = ["--i", "optimisation_set.star", "--b", "32", "--bin", "2", "--j", "1"]
    ref, job = Path(f"ref_{fault}"), Path(f"job_{fault}")
    assert main([*flags, "--o", str(ref)]) == 0
    capsys.readouterr()
    real, saved = np.save, []

    def save(path, arr, *args, **kwargs):
        saved.append(Path(path).name)
        if len(saved) == call:
            if fault == "numpy":  # what numpy raises when the disk fills mid-write
                Path(path).write_bytes(b"\x93NUMPY partial")
                raise OSError(f"{arr.nbytes} requested and 31216 written")
            raise FAULTS[fault](path)
        return real(path, arr, *args, **kwargs)

    monkeypatch.setattr(np, "save", save)
    assert main([*flags, "--o", str(job)]) == 4
    msg = ends_cleanly(capsys, job)
    name = "checkpoint_rank0_2_data.npy" if call == 3 else "checkpoint_rank0_2_weight.npy"
    assert f"{job}/temp/{name}: cannot write" in msg, msg
    assert ("requested and" in msg) if fault == "numpy" else (CAUSE[fault] in msg)
    temp = sorted(p.name for p in (job / "temp").iterdir())
    assert temp == [
        "checkpoint_rank0.json", "checkpoint_rank0_1_data.npy", "checkpoint_rank0_1_weight.npy"
    ], temp  # fmt: skip
    assert not list(job.glob("*.mrc"))
    monkeypatch.setattr(np, "save", real)
    assert main([*flags, "--o", str(job), "--only_do_unfinished"]) == 0
    same_maps(maps_of(job), maps_of(ref))


def test_a_job_folder_that_cannot_be_created(project, capsys, monkeypatch):  # noqa: F811
    """The job.star and note that the widget writes before starting a job."""
    from napari_subtomo_recon.errors import EnvironmentFault
    from napari_subtomo_recon.job import relion
    from napari_subtomo_recon.params import ReconstructParams

    p = ReconstructParams.for_gui().replace(
        project_dir=str(project), optimisation_set="optimisation_set.star",
        output_dir="job/", box_size=32,
    )  # fmt: skip
    real = os.replace

    def replace(src, dst):
        if str(dst).endswith("job.star"):
            raise FAULTS["ENOSPC"](dst)
        return real(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(EnvironmentFault, match=r"job/job.star: cannot write \(No space left"):
        relion.start(project / "job", p, False, ["subtomo-recon ..."])
    assert not [q for q in (project / "job").iterdir() if ".tmp-" in q.name]
