"""MPI: `mpirun -n 2 subtomo-recon` equals a single process; a failing rank stops every rank."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import mrcfile
import numpy as np
import pytest

pytestmark = pytest.mark.mpi
SRC = str(Path(__file__).parents[1] / "src")
INPUTS = Path(__file__).parent / "fixtures" / "relion" / "inputs"
FLAGS = [
    "--i",
    "optimisation_set.star",
    "--b",
    "32",
    "--bin",
    "2",
    "--crop",
    "24",
    "--sym",
    "C2",
    "--j",
    "1",
]


def mpirun() -> list[str]:
    exe = shutil.which("mpirun") or shutil.which("mpiexec")
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        exe = None
    if exe is None:
        if os.environ.get("SUBTOMO_REQUIRE_MPI") == "1":
            pytest.fail("mpirun and mpi4py are required here (SUBTOMO_REQUIRE_MPI=1)")
        pytest.skip("needs mpirun and mpi4py")
    extra = (
        ["--oversubscribe"]
        if "Open MPI" in subprocess.run([exe, "--version"], capture_output=True, text=True).stdout
        else []
    )
    return [exe, *extra]


def run(cmd, cwd, **env):
    e = dict(
        os.environ,
        PYTHONPATH=SRC,
        OMPI_ALLOW_RUN_AS_ROOT="1",
        OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
        **env,
    )
    return subprocess.run(cmd, cwd=cwd, env=e, capture_output=True, text=True, timeout=600)


def test_two_ranks_equal_one_process(tmp_path):
    launcher = mpirun()
    cli = [sys.executable, "-m", "napari_subtomo_recon"]
    r1 = run([*cli, *FLAGS, "--o", str(tmp_path / "one")], INPUTS / "r5")
    assert r1.returncode == 0, r1.stderr
    r2 = run([*launcher, "-n", "2", *cli, *FLAGS, "--o", str(tmp_path / "two")], INPUTS / "r5")
    assert r2.returncode == 0, r2.stderr
    assert "rank" not in r2.stdout.lower() or "merged" in r2.stdout
    for name in ("merged", "half1", "half2", "merged_full"):
        a = mrcfile.read(tmp_path / "one" / f"{name}.mrc").astype(np.float64)
        b = mrcfile.read(tmp_path / "two" / f"{name}.mrc").astype(np.float64)
        assert np.sqrt(((a - b) ** 2).sum() / (a**2).sum()) <= 1e-6, name
    assert not (tmp_path / "two" / "temp").exists()


def test_ranks_split_particles_not_tomograms():
    """Three ranks on two tilt series: every rank gets work (RELION would idle one)."""
    from napari_subtomo_recon.cli import parse_args
    from napari_subtomo_recon.job import load_inputs, plan_work, split_plans

    cwd = os.getcwd()
    os.chdir(INPUTS / "r5")
    try:
        params, _ = parse_args([*FLAGS, "--o", "x"])
        plans = plan_work(params, load_inputs(params))
    finally:
        os.chdir(cwd)
    shares = [split_plans(plans, r, 3) for r in range(3)]
    work = [sum(p.work for p in share) for share in shares]
    assert min(work) > 0 and sum(work) == sum(p.work for p in plans)
    # each boundary particle goes to one side: a share is off by at most one particle's work
    assert max(work) - min(work) <= 2 * max(p.geo.visible.sum(axis=1).max() for p in plans)
    ids = np.concatenate([p.particles for share in shares for p in share])
    assert np.array_equal(np.sort(ids), np.arange(len(ids)))


@pytest.mark.parametrize(
    ("fault", "code"),
    [("InputError('simulated failure')", 1),
     ("OSError(28, 'No space left on device', 'simulated.npy')", 4)],
)  # fmt: skip
def test_a_failing_rank_stops_every_rank_without_outputs(tmp_path, fault, code):
    """Every rank stops with rank 1's message and its kind: bad input exits 1, a full disk
    on another rank is still an environment fault (4)."""
    launcher = mpirun()
    data = tmp_path / "r5"
    shutil.copytree(INPUTS / "r5", data)
    # the real program, with a fault injected on rank 1 when backprojection starts
    failing = tmp_path / "failing_rank.py"
    failing.write_text(
        "import sys\n"
        "from mpi4py import MPI\n"
        "from napari_subtomo_recon import job\n"
        "from napari_subtomo_recon.errors import InputError\n"
        "from napari_subtomo_recon.job.runner import Job\n"
        "def fault(step):\n"
        "    if step == 'backproject' and MPI.COMM_WORLD.Get_rank() == 1:\n"
        f"        raise {fault}\n"
        "job.run = lambda params, **kw: Job(params, faults=fault, **kw).run()\n"
        "from napari_subtomo_recon.cli import main\n"
        "sys.exit(main())\n"
    )
    r = run(
        [*launcher, "-n", "2", sys.executable, str(failing), *FLAGS, "--o", str(tmp_path / "job")],
        data,
    )
    assert r.returncode == code, r.stderr
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("subtomo-recon: error:")]
    assert errors and all("rank 1" in ln for ln in errors), r.stderr
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "job" / "merged.mrc").exists()


def test_sigterm_under_mpirun_cancels_every_rank(tmp_path):
    """A cancel on one rank is a cancel (exit 3, RELION_JOB_EXIT_ABORTED), not a failure."""
    import signal

    launcher = mpirun()
    slow = tmp_path / "slow.py"  # the real program, slowed down so it can be caught mid-run
    slow.write_text(
        "import sys, time\n"
        "import napari_subtomo_recon.core.backprojection as bp\n"
        "_insert = bp.insert_slices\n"
        "def insert(*a, **k):\n"
        "    time.sleep(0.05)\n"
        "    return _insert(*a, **k)\n"
        "bp.insert_slices = insert\n"
        "from napari_subtomo_recon.cli import main\n"
        "sys.exit(main())\n"
    )
    out = tmp_path / "job"
    env = dict(os.environ, PYTHONPATH=SRC, SUBTOMO_EVENTS="stderr")
    env.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    cmd = [*launcher, "-n", "2", sys.executable, str(slow), *FLAGS, "--o", str(out) + "/",
           "--pipeline_control", str(out) + "/"]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=INPUTS / "r5", env=env, stderr=subprocess.PIPE, text=True)
    for line in proc.stderr:
        if '"stage":"backprojecting"' in line and '"done":0,' not in line:
            break
    # what a scheduler does: SIGTERM to the processes of the job
    for pid in subprocess.run(
        ["pgrep", "-f", str(slow)], capture_output=True, text=True
    ).stdout.split():
        os.kill(int(pid), signal.SIGTERM)
    rest = proc.stderr.read()
    proc.wait(timeout=60)
    assert (out / "RELION_JOB_EXIT_ABORTED").exists(), rest
    assert not (out / "RELION_JOB_EXIT_FAILURE").exists()
    assert not (out / "merged.mrc").exists()
    assert "Traceback" not in rest
