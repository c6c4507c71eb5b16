"""--mem: a job given less memory than full speed needs runs smaller batches to the same
maps, and one that cannot fit is refused before any work.  (Resident memory itself is
measured by ``benchmarks/bench.py run --mem-check``: bin 1, box 512 within --mem 8.)"""

from pathlib import Path

import mrcfile
import numpy as np
import pytest

from napari_subtomo_recon.cli import main, parse_args
from napari_subtomo_recon.job.plan import memory_estimate
from napari_subtomo_recon.job.runner import Job
from napari_subtomo_recon.simulate import simulate

MAPS = ["merged", "half1", "half2", "merged_full", "data_merged", "weight_merged"]
FLAGS = ["--i", "optimisation_set.star", "--b", "64", "--crop", "48", "--bin", "2", "--j", "2"]


def drain(gen):
    while True:
        try:
            next(gen)
        except StopIteration as stop:
            return stop.value


def planned(argv, root):
    """The job's plan (with --mem applied) and the estimate for its settings."""
    params, _ = parse_args(argv)
    job = Job(params, root=str(root))
    inp = drain(job.load())
    plan = drain(job.plan(inp))
    if job.lock is not None:
        job.lock.release()
    return plan, memory_estimate(params, plan.plans, plan.settings)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return simulate(tmp_path_factory.mktemp("mem"), n_tomograms=1, particles_per_tomogram=40,
                    seed=4).root  # fmt: skip


def test_mem_runs_smaller_batches_to_the_same_maps(data, tmp_path, monkeypatch):
    monkeypatch.chdir(data)
    full_plan, full_need = planned([*FLAGS, "--o", str(tmp_path / "p")], data)
    assert full_plan.settings.insertion_batch() == 256
    # a cap the full-speed batches do not fit but 1/4 of them do
    slices = full_plan.settings.insertion_batch()
    per = (full_need - memory_estimate_at(full_plan, data, slices // 4)) / (slices * 3 / 4)
    cap = (full_need - per * slices / 2) / 2**30
    capped_plan, capped_need = planned([*FLAGS, "--o", str(tmp_path / "p2"), "--mem", f"{cap!r}"],
                                       data)  # fmt: skip
    assert capped_need <= cap * 2**30 < full_need
    assert capped_plan.settings.insertion_batch() < slices

    assert main([*FLAGS, "--o", str(tmp_path / "full")]) == 0
    assert main([*FLAGS, "--o", str(tmp_path / "capped"), "--mem", f"{cap!r}"]) == 0
    for name in MAPS:
        a = mrcfile.read(tmp_path / "full" / f"{name}.mrc").astype(np.float64)
        b = mrcfile.read(tmp_path / "capped" / f"{name}.mrc").astype(np.float64)
        # single-precision batch sums: the batches differ, the maps by rounding only
        assert np.sqrt(((a - b) ** 2).sum() / (a**2).sum()) < 1e-6, name


def memory_estimate_at(plan, root, slices):
    st = plan.settings
    saved = st.batch_bytes
    from napari_subtomo_recon.core.backprojection import packed_bytes

    st.batch_bytes = slices * packed_bytes(st.box)
    params, _ = parse_args([*FLAGS, "--o", "x"])
    try:
        return memory_estimate(params, plan.plans, st)
    finally:
        st.batch_bytes = saved


def test_mem_too_small_for_the_accumulators_is_refused_before_any_work(data, tmp_path, capsys,
                                                                      monkeypatch):  # fmt: skip
    monkeypatch.chdir(data)
    out = tmp_path / "small"
    assert main([*FLAGS, "--o", str(out), "--mem", "0.0001"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--mem 0.0001: this job needs about" in err[0], err
    assert "accumulators for --b 64" in err[0]
    assert not Path(out, "merged.mrc").exists()
