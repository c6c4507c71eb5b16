"""Checkpoints and resume, cancellation, and determinism across thread counts."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import mrcfile
import numpy as np
import pytest

from napari_subtomo_recon.cli import parse_args
from napari_subtomo_recon.errors import InputError
from napari_subtomo_recon.job import run, run_to_completion
from napari_subtomo_recon.simulate import simulate

SRC = str(Path(__file__).parents[2] / "src")
INPUTS = Path(__file__).parents[1] / "fixtures" / "relion" / "inputs"
FLAGS = ["--i", "optimisation_set.star", "--b", "48", "--bin", "2", "--exact", "--j", "1"]


@pytest.fixture(scope="module")
def three_tomograms(tmp_path_factory):
    return simulate(
        tmp_path_factory.mktemp("resume"), n_tomograms=3, particles_per_tomogram=30, seed=9
    )


def relative(a, b):
    a, b = a.astype(np.float64), b.astype(np.float64)
    return np.sqrt(((a - b) ** 2).sum() / (b**2).sum())


@pytest.mark.parametrize("half_sets", [True, False])
def test_killed_run_resumes_to_the_uninterrupted_maps(tmp_path, half_sets, three_tomograms):
    root = three_tomograms.root
    flags = list(FLAGS)
    if not half_sets:
        import starfile

        blocks = starfile.read(root / "particles.star", always_dict=True)
        blocks["particles"] = blocks["particles"].drop(columns=["rlnRandomSubset"])
        starfile.write(blocks, tmp_path / "nohalf.star")
        flags += ["--p", str(tmp_path / "nohalf.star")]
    ref = tmp_path / "ref"
    env = dict(os.environ, PYTHONPATH=SRC)
    cmd = [sys.executable, "-m", "napari_subtomo_recon", *flags]
    subprocess.run([*cmd, "--o", str(ref)], cwd=root, env=env, check=True, capture_output=True)

    out = tmp_path / "killed"
    proc = subprocess.Popen([*cmd, "--o", str(out)], cwd=root, env=env, stderr=subprocess.DEVNULL)
    record = out / "temp" / "checkpoint_rank0.json"
    deadline = time.time() + 120
    while not record.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.002)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert not (out / "merged.mrc").exists()

    r = subprocess.run(
        [*cmd, "--o", str(out), "--only_do_unfinished"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    for name in ("merged", "half1", "half2") if half_sets else ("merged",):
        assert (
            relative(mrcfile.read(out / f"{name}.mrc"), mrcfile.read(ref / f"{name}.mrc")) <= 1e-6
        )
    assert not (out / "temp").exists()  # checkpoints removed when the job is done


def test_resume_refuses_a_checkpoint_of_other_settings(tmp_path, monkeypatch):
    monkeypatch.chdir(INPUTS / "r5")
    base = ["--i", "optimisation_set.star", "--o", str(tmp_path / "j"), "--b", "32", "--j", "1"]
    p, _ = parse_args([*base, "--bin", "2"])
    gen = run(p)
    for pr in gen:  # stop after the first tomogram's checkpoint
        if pr.tomogram_index == 2:
            break
    gen.close()
    assert (tmp_path / "j" / "temp" / "checkpoint_rank0.json").exists()
    assert not (tmp_path / "j" / "merged.mrc").exists()  # cancelled: no maps
    p, _ = parse_args([*base, "--bin", "2.5", "--only_do_unfinished"])
    with pytest.raises(InputError, match="made with binning = 2.0, not 2.5"):
        run_to_completion(p)


def test_resume_refuses_a_checkpoint_of_edited_inputs(tmp_path, monkeypatch):
    """A tilt-series file edited after the checkpoint (here: defocus +1 µm) is named."""
    import shutil

    import starfile

    shutil.copytree(INPUTS / "r5", tmp_path / "p")
    monkeypatch.chdir(tmp_path / "p")
    base = ["--i", "optimisation_set.star", "--o", "j/", "--b", "32", "--bin", "2", "--j", "1"]
    gen = run(parse_args(base)[0])
    for pr in gen:  # stop after the first tomogram's checkpoint
        if pr.tomogram_index == 2:
            break
    gen.close()
    tomograms = starfile.read("tomograms.star", always_dict=True)
    ts_file = str(next(iter(tomograms.values()))["rlnTomoTiltSeriesStarFile"].iloc[0])
    blocks = starfile.read(ts_file, always_dict=True)
    for block in blocks.values():
        for label in ("rlnDefocusU", "rlnDefocusV"):
            if label in block:
                block[label] = block[label] + 10000.0
    starfile.write(blocks, ts_file, overwrite=True)
    with pytest.raises(InputError, match=f"other inputs: {ts_file} has changed since"):
        run_to_completion(parse_args([*base, "--only_do_unfinished"])[0])


def test_no_backup_writes_no_checkpoints(tmp_path, monkeypatch):
    monkeypatch.chdir(INPUTS / "r5")
    p, _ = parse_args(
        [
            "--i",
            "optimisation_set.star",
            "--o",
            str(tmp_path / "j"),
            "--b",
            "32",
            "--bin",
            "2",
            "--no_backup",
        ]
    )
    gen = run(p)
    seen = False
    for pr in gen:
        if pr.tomogram_index == 2:
            seen = True
            assert not (tmp_path / "j" / "temp").exists()
    assert seen


def test_cancel_leaves_no_maps(tmp_path, monkeypatch):
    monkeypatch.chdir(INPUTS / "r5")
    p, _ = parse_args(
        ["--i", "optimisation_set.star", "--o", str(tmp_path / "j"), "--b", "32", "--bin", "2"]
    )
    gen = run(p)
    for pr in gen:
        if pr.stage == "backprojecting" and pr.done > 0:
            break
    gen.close()
    assert not [f for f in (tmp_path / "j").rglob("*") if f.is_file()]


def test_same_maps_whatever_the_threads(tmp_path, monkeypatch):
    monkeypatch.chdir(INPUTS / "r5")
    maps = []
    for j in ("1", "2"):
        p, _ = parse_args(
            [
                "--i",
                "optimisation_set.star",
                "--o",
                str(tmp_path / j),
                "--b",
                "32",
                "--bin",
                "2",
                "--sym",
                "C3",
                "--j",
                j,
            ]
        )
        run_to_completion(p)
        maps.append(mrcfile.read(tmp_path / j / "merged.mrc"))
    assert relative(maps[1], maps[0]) <= 1e-6
