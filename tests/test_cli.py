"""The command line: RELION's flags verbatim, outputs, errors and pipeline control."""

import os
import subprocess
import sys
from pathlib import Path

import mrcfile
import pytest
import starfile

from napari_subtomo_recon.cli import main, parse_args
from napari_subtomo_recon.errors import InputError

INPUTS = Path(__file__).parent / "fixtures" / "relion" / "inputs"
SRC = str(Path(__file__).parents[1] / "src")


def test_relion_gui_command_line_parses_verbatim():
    # what RELION's GUI runs for the tutorial's Reconstruct particle job (program name replaced)
    argv = (
        "--i Extract/job010/optimisation_set.star --theme classic --o Reconstruct/job011/ "
        "--b 192 --crop 96 --bin 6 --j 12 --j_out 12 --j_in 1 --sym C6 --mem 50 "
        "--pipeline_control Reconstruct/job011/"
    ).split()
    p, extra = parse_args(argv)
    got = (
        p.optimisation_set, p.output_dir, p.box_size, p.crop_size, p.binning, p.threads,
        p.threads_out, p.threads_in, p.symmetry, p.memory_gb,
    )  # fmt: skip
    assert got == (
        "Extract/job010/optimisation_set.star", "Reconstruct/job011/",
        192, 96, 6.0, 12, 12, 1, "C6", 50.0,
    )  # fmt: skip
    assert p.pipeline_control == "Reconstruct/job011/" and p.theme == "classic"
    p, _ = parse_args(
        ["--o", "x", "--b", "64", "--SNR", "0.001", "--no_ctf", "--whiten", "--crop", "-1"]
    )
    assert p.snr == 0.001 and p.no_ctf and p.whiten and p.crop_size == -1


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--o", "x", "--b", "64", "--bogus", "1"], "unknown flag --bogus"),
        (["--o", "x", "--b"], "--b needs a value"),
        (["--o", "x", "--b", "big"], "--b big: expected an integer"),
        (["--o", "x", "--bin", "two"], "--bin two: expected a number"),
        (["--o", "x", "--o", "y"], "--o given twice"),
        (["stray"], "unexpected argument 'stray'"),
    ],
)
def test_bad_flags_are_refused(argv, message):
    with pytest.raises(InputError, match=message):
        parse_args(argv)


def test_errors_are_one_line_and_exit_non_zero(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["--i", "missing.star", "--o", "out", "--b", "32"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["subtomo-recon: error: missing.star: optimisation set not found"]
    assert main(["--o", "out", "--b", "32", "--whatever"]) == 1
    assert "unknown flag --whatever" in capsys.readouterr().err
    assert not (tmp_path / "out" / "merged.mrc").exists()
    assert main(["--help"]) == 0 and "--nr_helical_asu" in capsys.readouterr().out


def run_cli(cwd, *args, env=None):
    e = dict(os.environ, PYTHONPATH=SRC, **(env or {}))
    return subprocess.run(
        [sys.executable, "-m", "napari_subtomo_recon", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env=e,
    )


def test_python_m_writes_relions_outputs(tmp_path):
    out = tmp_path / "job"
    r = run_cli(
        INPUTS / "r5",
        "--i",
        "optimisation_set.star",
        "--o",
        str(out),
        "--b",
        "32",
        "--bin",
        "2",
        "--crop",
        "24",
        "--j",
        "2",
    )
    assert r.returncode == 0, r.stderr
    names = {p.name for p in out.iterdir()}
    for tag in ("merged", "half1", "half2"):
        assert {f"{tag}.mrc", f"{tag}_full.mrc", f"data_{tag}.mrc", f"weight_{tag}.mrc"} <= names
    assert {"optimisation_set.star", "note.txt"} <= names
    assert not any(n.startswith(".") for n in names)  # no temporary files left
    with mrcfile.open(out / "merged.mrc") as m:
        assert m.data.shape == (24, 24, 24) and m.data.dtype.name == "float32"
        assert float(m.voxel_size.x) == pytest.approx(4.0)
    opt = starfile.read(out / "optimisation_set.star")
    assert opt["rlnTomoParticlesFile"] == "particles.star"
    assert opt["rlnTomoReferenceMap1File"] == str(out / "half1.mrc")
    assert "--b 32" in (out / "note.txt").read_text()
    assert "half-map FSC" in r.stdout and str(out / "merged.mrc") in r.stdout


def test_without_half_sets_only_merged(tmp_path):
    out = tmp_path / "job"
    r = run_cli(
        INPUTS / "r5",
        "--p",
        "particles_nohalf.star",
        "--t",
        "tomograms.star",
        "--o",
        str(out),
        "--b",
        "32",
        "--bin",
        "2",
        "--j",
        "2",
    )
    assert r.returncode == 0, r.stderr
    assert "no rlnRandomSubset" in r.stderr
    names = {p.name for p in out.iterdir()}
    assert "merged.mrc" in names and not any("half" in n for n in names)


def test_pipeline_control_success_and_abort(tmp_path):
    out = tmp_path / "Reconstruct" / "job001"
    args = ["--i", "optimisation_set.star", "--o", str(out) + "/", "--b", "32", "--bin", "2",
            "--j", "2",
            "--theme", "classic", "--pipeline_control", str(out) + "/"]  # fmt: skip
    r = run_cli(INPUTS / "r5", *args)
    assert r.returncode == 0, r.stderr
    assert (out / "RELION_JOB_EXIT_SUCCESS").exists()
    assert not (out / "note.txt").exists()  # the pipeliner writes it, as with RELION
    (out / "RELION_JOB_ABORT_NOW").touch()
    (out / "merged.mrc").unlink()
    r = run_cli(INPUTS / "r5", *args)
    assert r.returncode == 3 and (out / "RELION_JOB_EXIT_ABORTED").exists()
    assert not (out / "merged.mrc").exists()


def test_events_for_a_parent_process(tmp_path):
    """SUBTOMO_EVENTS=stderr: every stage as an event, the result last, paths absolute."""
    import shutil

    from napari_subtomo_recon import events as ev

    shutil.copytree(INPUTS / "r5", tmp_path / "p")
    r = run_cli(
        tmp_path / "p", "--i", "optimisation_set.star", "--o", "j/", "--b", "32", "--bin", "2",
        env={"SUBTOMO_EVENTS": "stderr", "SUBTOMO_PREVIEW_SECONDS": "0.001"},
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    events = [e for e in map(ev.decode, r.stderr.splitlines()) if e is not None]
    assert all(ln.startswith(ev.PREFIX) for ln in r.stderr.splitlines()), r.stderr
    stages = [e.stage for e in events if isinstance(e, ev.Progress)]
    order = [ev.Stage.READING, ev.Stage.CHECKING, ev.Stage.BACKPROJECTING,
             ev.Stage.FINALISING, ev.Stage.WRITING, ev.Stage.DONE]  # fmt: skip
    assert [s for s in order if s in stages] == order
    assert stages == sorted(stages, key=order.index)  # never back to an earlier stage
    previews = [e for e in events if isinstance(e, ev.Preview)]
    assert previews and all(p.path.is_absolute() for p in previews)
    assert not previews[-1].path.exists()  # removed with the job's temp folder
    result = events[-1]
    assert isinstance(result, ev.Result) and result.output_dir == tmp_path / "p" / "j"
    assert result.files["merged"] == tmp_path / "p" / "j" / "merged.mrc"
    assert result.fsc is not None and result.resolution_0143 > 0
    # a failure is an event too, with its kind
    r = run_cli(tmp_path, "--i", "nope.star", "--o", "j/", "--b", "32",
                env={"SUBTOMO_EVENTS": "stderr"})  # fmt: skip
    *_, failure = [e for e in map(ev.decode, r.stderr.splitlines()) if e is not None]
    assert isinstance(failure, ev.Failure) and failure.reason == ev.FailureKind.INPUT
    assert r.returncode == failure.exit_code == 1 and "nope.star" in failure.message


def test_sigterm_cancels_without_maps(tmp_path):
    """A scheduler's SIGTERM ends the job like RELION_JOB_ABORT_NOW: exit 3, no maps."""
    import signal

    out = tmp_path / "job"
    e = dict(os.environ, PYTHONPATH=SRC, SUBTOMO_EVENTS="stderr")
    args = ["--i", "optimisation_set.star", "--o", str(out) + "/", "--b", "32", "--bin", "2",
            "--j", "1", "--exact", "--pipeline_control", str(out) + "/"]  # fmt: skip
    proc = subprocess.Popen(
        [sys.executable, "-m", "napari_subtomo_recon", *args], cwd=INPUTS / "r5", env=e,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    for line in proc.stderr:  # wait until it backprojects, then stop it
        if '"stage":"backprojecting"' in line:
            break
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)
    assert proc.returncode == 3
    assert (out / "RELION_JOB_EXIT_ABORTED").exists()
    assert not (out / "merged.mrc").exists()


def test_a_project_folder_instead_of_the_working_directory(tmp_path, monkeypatch):
    """run(root=...) resolves every relative path against the project folder (no chdir)."""
    import shutil

    from napari_subtomo_recon.job import run_to_completion

    project = tmp_path / "project"
    shutil.copytree(INPUTS / "r5", project)
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    p, _ = parse_args(
        ["--i", "optimisation_set.star", "--o", "Reconstruct/job001/", "--b", "32", "--bin", "2"]
    )
    res = run_to_completion(p, root=str(project))
    assert res.files["merged"] == project / "Reconstruct" / "job001" / "merged.mrc"
    opt = starfile.read(res.files["optimisation_set"])
    assert opt["rlnTomoReferenceMap1File"] == "Reconstruct/job001/half1.mrc"
    assert not any((tmp_path / "elsewhere").iterdir())


@pytest.mark.parametrize("preset", [None, "ACTIVE"])
def test_openmp_workers_wait_passively_unless_told_otherwise(preset):
    # set by the package before Numba's OpenMP layer loads; a user's setting wins
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    env["PYTHONPATH"] = SRC
    if preset:
        env["OMP_WAIT_POLICY"] = preset
    code = (
        "import os, napari_subtomo_recon.core.insertion, numba; "
        "print(os.environ['OMP_WAIT_POLICY'])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == (preset or "PASSIVE")


@pytest.mark.parametrize("snr", ["0", "0.5"])
def test_reported_fsc_is_that_of_the_written_half_maps(tmp_path, monkeypatch, snr):
    """The job's half-map FSC (from the maps' transforms, before they are transformed
    back) is the FSC of half1_full.mrc and half2_full.mrc as written, with RELION's
    heuristic division and with a Wiener SNR."""
    import shutil

    import numpy as np

    from napari_subtomo_recon.core.fsc import fsc
    from napari_subtomo_recon.job import run_to_completion

    shutil.copytree(INPUTS / "r5", tmp_path / "p")
    monkeypatch.chdir(tmp_path / "p")
    args = ["--i", "optimisation_set.star", "--o", "j/", "--b", "32", "--crop", "24",
            "--bin", "2", "--j", "1", "--SNR", snr]  # fmt: skip
    result = run_to_completion(parse_args(args)[0])
    h1, h2 = (mrcfile.read(f"j/half{h}_full.mrc") for h in (1, 2))
    expected = fsc(h1, h2)
    assert expected[1] > 0.5 and expected[1:].max() < 0.99  # related half maps that differ
    np.testing.assert_allclose(result.fsc, expected, rtol=0, atol=1e-5)
