"""What the job refuses before any work: outputs over inputs, outputs that cannot be
written, jobs that would write empty maps."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest

from napari_subtomo_recon.cli import main

INPUTS = Path(__file__).parents[1] / "fixtures" / "relion" / "inputs"
FLAGS = ["--i", "optimisation_set.star", "--b", "32", "--bin", "2", "--j", "2"]


@pytest.fixture
def project(tmp_path, monkeypatch):
    shutil.copytree(INPUTS / "r5", tmp_path / "p")
    monkeypatch.chdir(tmp_path / "p")
    return tmp_path / "p"


def digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.md5(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def one_error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("subtomo-recon: error: "), err
    return err[0]


@pytest.mark.parametrize("out", [".", "./", "sub/.."])
def test_an_output_over_an_input_is_refused(project, capsys, out):
    before = digest(project)
    assert main([*FLAGS, "--o", out]) == 1
    msg = one_error(capsys)
    assert "would replace the optimisation set optimisation_set.star" in msg
    assert "choose another output folder" in msg
    assert digest(project) == before  # nothing written, nothing changed


def test_an_output_over_a_reference_map_is_refused(project, capsys):
    opt = project / "optimisation_set.star"
    opt.write_text(opt.read_text() + "_rlnTomoReferenceMap1File job/half1.mrc\n")
    (project / "job").mkdir()
    (project / "job" / "half1.mrc").write_bytes(b"an earlier map")
    assert main([*FLAGS, "--o", "job/"]) == 1
    assert "would replace the reference map job/half1.mrc" in one_error(capsys)
    assert (project / "job" / "half1.mrc").read_bytes() == b"an earlier map"


def test_a_folder_where_an_output_goes_is_refused_before_any_work(project, capsys):
    (project / "job" / "half2.mrc").mkdir(parents=True)
    assert main([*FLAGS, "--o", "job/"]) == 1
    assert "job/half2.mrc: is a folder" in one_error(capsys)
    assert sorted(p.name for p in (project / "job").iterdir()) == ["half2.mrc"]


def test_particles_outside_every_tilt_image_are_a_clear_error(project, capsys):
    import starfile

    parts = starfile.read(project / "particles.star", always_dict=True)
    table = parts["particles"]
    for axis in "XYZ":
        label = f"rlnCenteredCoordinate{axis}Angst"
        if label in table:
            table[label] = table[label] * 1e4  # e.g. pixels taken for Ångström
    starfile.write(parts, project / "particles.star", overwrite=True)
    assert main([*FLAGS, "--o", "job/"]) == 1
    msg = one_error(capsys)
    assert "particles project outside the tilt images" in msg and "coordinate units" in msg
    assert not (project / "job" / "merged.mrc").exists()


def test_one_job_at_a_time_in_a_folder(project, capsys):
    import json
    import subprocess
    import sys

    from napari_subtomo_recon.job.lock import LOCK_NAME

    job = project / "job"
    job.mkdir()
    # a running job (this sleeper stands for it) holds the lock
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (job / LOCK_NAME).write_text(
            json.dumps({"host": __import__("socket").gethostname(), "pid": sleeper.pid})
        )
        assert main([*FLAGS, "--o", "job/"]) == 1
        msg = one_error(capsys)
        assert f"another job (process {sleeper.pid}) is writing into this folder" in msg
        assert not (job / "merged.mrc").exists()
        # the widget refuses to start there too
        from napari_subtomo_recon.job import relion
        from napari_subtomo_recon.params import ReconstructParams

        p = ReconstructParams.for_gui().replace(
            project_dir=str(project), optimisation_set="optimisation_set.star",
            output_dir="job/", box_size=32,
        )  # fmt: skip
        assert f"another job (process {sleeper.pid})" in relion.check(p)
    finally:
        sleeper.kill()
        sleeper.wait()
    # the job was killed: its lock and temporary files are stale, the next run takes over
    (job / ".merged.tmp-999999999.mrc").write_bytes(b"half written")
    (job / "temp").mkdir()
    (job / "temp" / ".checkpoint_rank0_1_data.tmp-999999999.npy").write_bytes(b"x")
    assert main([*FLAGS, "--o", "job/"]) == 0
    names = sorted(p.name for p in job.iterdir())
    assert LOCK_NAME not in names and not [n for n in names if ".tmp-" in n], names
    assert "merged.mrc" in names and not (job / "temp").exists()


def test_a_finished_job_is_not_done_again(project, capsys):
    assert main([*FLAGS, "--o", "job/"]) == 0
    before = digest(project / "job")
    capsys.readouterr()
    assert main([*FLAGS, "--o", "job/", "--only_do_unfinished"]) == 0
    captured = capsys.readouterr()
    assert "the job has finished" in captured.err and "nothing left to do" in captured.err
    assert digest(project / "job") == before  # nothing recomputed, nothing rewritten


def test_an_empty_half_set_is_a_warning_without_fsc(project, capsys):
    import starfile

    parts = starfile.read(project / "particles.star", always_dict=True)
    parts["particles"]["rlnRandomSubset"] = 1  # every particle in half 1
    starfile.write(parts, project / "particles.star", overwrite=True)
    assert main([*FLAGS, "--o", "job/"]) == 0
    captured = capsys.readouterr()
    assert "half set 2 has no particle-tilts" in captured.err
    assert "FSC" not in captured.out  # no resolution is claimed
    assert (project / "job" / "half2.mrc").is_file()


@pytest.mark.parametrize(
    ("flags", "fragments"),
    [
        (["--nr_helical_asu", "1000000000"],
         ["--nr_helical_asu 1000000000: must be in [1, 1000]", "one more pass"]),
        (["--helical_twist", "inf"], ["--helical_twist inf: must be a finite number"]),
        (["--bin", "1e308"], ["--b 32 at --bin 1e+308", "more than 4× the tilt images"]),
        (["--bin", "nan"], ["--bin nan: must be a finite number"]),
        (["--b", "4096"], ["--b 4096 at --bin 2", "8192 pixels wide"]),
    ],
)  # fmt: skip
def test_allocations_that_scale_with_a_flag_are_bounded_before_work(
    project, capsys, flags, fragments
):
    """Before: a hang that grew memory until killed, or a ValueError called internal."""
    argv = [*FLAGS, "--o", "job/"]
    for k in range(0, len(flags), 2):
        if flags[k] in argv:
            argv[argv.index(flags[k]) + 1] = flags[k + 1]
        else:
            argv += flags[k : k + 2]
    assert main(argv) == 1
    msg = one_error(capsys)
    for f in fragments:
        assert f in msg, (f, msg)
    assert not (project / "job" / "merged.mrc").exists()
