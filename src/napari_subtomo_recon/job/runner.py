"""The Reconstruct particle job in stages: load → plan → backproject → finalise → write.

:func:`run` is a generator: it yields :class:`~..events.Progress` (and, with a preview
interval, :class:`~..events.Preview`) events and returns the :class:`~..events.Result`.
Closing it (or not iterating further) cancels the job: maps are only written at the very
end, as one group, so a cancelled job leaves none.

The stages are methods of :class:`Job`; MPI, checkpoints and the preview are small
collaborators (:mod:`.collaborators`).  Under MPI every stage ends with an agreement:
if any rank failed, every rank stops with that rank's message.  ``faults`` is a hook
for tests: it is called with the name of each step and may raise.
"""

from __future__ import annotations

import shlex
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from .. import events as ev
from ..errors import Cancelled, InputError
from ..io.star import at
from ..params import ReconstructParams, to_argv
from .collaborators import (
    Checkpoints,
    Comm,
    NoCheckpoints,
    PreviewWriter,
    clear_checkpoints,
    comm_of,
)
from .finalise import finalise_steps, preview_map
from .inputs import Inputs, input_files, load_inputs
from .lock import JobLock
from .outputs import (
    OutputGroup,
    check_output_dir,
    check_outputs,
    finished,
    input_paths,
    output_names,
    prepare_output_dir,
)
from .plan import (
    TomoPlan,
    check_visible,
    check_window,
    fit_memory,
    plan_work,
    settings_of,
    split_plans,
)

T = TypeVar("T")
Events = Generator[Any, None, T]


@dataclass
class Plan:
    """What this rank will do (the plan stage's result)."""

    all_plans: list[TomoPlan]  # every tilt series with particles (for the totals)
    plans: list[TomoPlan]  # this rank's share
    settings: Any  # core.backprojection.Settings
    voxel_size: float  # Å, of the maps
    total: int  # this rank's particle-tilts
    outputs: list[str] = field(default_factory=list)  # the files the job writes
    finished: bool = False  # --only_do_unfinished and the job has finished already


class Job:
    """One run; see the module docstring.  ``root``: the project folder that relative
    paths refer to (default: the working directory, as in RELION)."""

    def __init__(
        self,
        params: ReconstructParams,
        *,
        root: str | None = None,
        comm: Any = None,
        command: str | None = None,
        preview_interval: float | None = None,
        faults: Callable[[str], None] | None = None,
    ) -> None:
        self.params = params
        self.root = root
        self.comm: Comm = comm_of(comm)
        self.command = command or shlex.join(["subtomo-recon", *to_argv(params)])
        self.out_dir = Path(at(root, params.output_dir))
        self.faults = faults or (lambda step: None)
        self.preview = (
            PreviewWriter(self.out_dir / "temp" / "preview.mrc", preview_interval)
            if preview_interval and self.comm.rank == 0
            else None
        )
        self.t0 = time.perf_counter()
        self.done = 0
        self.lock: JobLock | None = None
        self._half_work = [1, 1]  # particle-tilts per half set

    # ------------------------------------------------------------------ the stages
    def run(self) -> Events[ev.Result]:
        self.params.check_runnable()
        inp = yield from self._agreed(self.load())
        try:
            return (yield from self._reconstruct(inp))
        finally:  # however the job ends: no preview file, no lock left behind
            if self.preview is not None:
                self.preview.remove()
            if self.lock is not None:
                self.lock.release()

    def _reconstruct(self, inp: Inputs) -> Events[ev.Result]:
        plan = yield from self._agreed(self.plan(inp))
        result = ev.Result(
            output_dir=self.out_dir,
            voxel_size=plan.voxel_size,
            particle_tilts=sum(p.work for p in plan.all_plans),
            particles=int(sum(p.particles.size for p in plan.all_plans)),
            warnings=list(inp.warnings),
        )
        if plan.finished:  # --only_do_unfinished on a finished job
            result.files = {Path(n).stem: self.out_dir / n for n in plan.outputs}
            result.warnings.append(
                f"{self.out_dir}: the job has finished (its maps are there and there are no "
                "checkpoints): nothing left to do"
            )
            return result
        acc = yield from self._agreed(self.backproject(inp, plan))
        self.comm.reduce(acc.data, acc.weight)
        if self.params.no_recon or self.comm.rank != 0:
            result.elapsed = self._elapsed()
            return result
        with OutputGroup(self.params, self.out_dir, plan.voxel_size) as group:
            curve = yield from self.finalise(inp, plan, acc, group)
            result.files = yield from self.write(inp, plan, group)
        self._fsc(result, curve)
        result.elapsed = self._elapsed()
        yield self._progress(ev.Stage.DONE, plan, message="finished")
        return result

    def load(self) -> Events[Inputs]:
        yield ev.Progress(ev.Stage.READING, message="reading inputs")
        self.faults("load")
        return load_inputs(self.params, self.root)

    def plan(self, inp: Inputs) -> Events[Plan]:
        check_window(self.params, inp)
        all_plans = plan_work(self.params, inp)
        plans = split_plans(all_plans, self.comm.rank, self.comm.size)
        st = settings_of(self.params)
        voxel_size = inp.tomograms.tomograms[0].pixel_size * self.params.binning
        plan = Plan(all_plans, plans, st, voxel_size, sum(p.work for p in plans))
        yield self._progress(ev.Stage.CHECKING, plan, message="checking tilt images")
        check_output_dir(self.out_dir)
        plan.outputs = output_names(self.params, inp.particles.has_half_sets)
        check_outputs(self.out_dir, plan.outputs, input_paths(self.params, inp, self.root))
        if self.params.only_do_unfinished and finished(self.out_dir, plan.outputs):
            plan.finished = True
            return plan
        check_visible(inp, all_plans)
        fit_memory(self.params, plans, st)
        from ..io import FrameReader

        with FrameReader() as reader:
            for name in check_tilt_images(plans, reader, st.threads):
                yield self._progress(
                    ev.Stage.CHECKING, plan, message=f"checking tilt images of {name}"
                )
        prepare_output_dir(self.out_dir)
        if self.comm.rank == 0:  # one job at a time in a folder (rank 0 speaks for all)
            self.lock = JobLock(self.out_dir)
            self.lock.acquire()
        return plan

    def backproject(self, inp: Inputs, plan: Plan) -> Events[Any]:
        import numba

        from ..core.aberrations import group_phases
        from ..core.backprojection import Accumulators, backproject, tilt_series_terms
        from ..io import FrameReader

        parts, st = inp.particles, plan.settings
        numba.set_num_threads(st.threads)
        s = int(self.params.box_size)
        gamma_offset = group_phases(parts.optics.even_zernike, s, plan.voxel_size, odd=False)
        odd_phase = group_phases(parts.optics.odd_zernike, s, plan.voxel_size, odd=True)
        acc = Accumulators.zeros(s)
        half_all = (parts.subset - 1) if parts.has_half_sets else np.zeros(len(parts), np.int64)
        self._half_work = [
            sum(int(p.geo.visible[half_all[p.particles] == h].sum()) for p in plan.all_plans)
            for h in (0, 1)
        ]
        ckpt = self._checkpoints(inp)
        finished = ckpt.resume(acc.data, acc.weight)
        self.done = sum(p.work for p in plan.plans if p.ts.name in finished)
        self.faults("backproject")
        px0 = inp.tomograms.tomograms[0].pixel_size
        with FrameReader() as reader:
            for n_t, p in enumerate(plan.plans):
                if p.ts.name in finished:
                    continue
                self._check_abort()
                tomo = (p, n_t + 1)
                yield self._progress(ev.Stage.BACKPROJECTING, plan, tomo)
                terms = tilt_series_terms(p.ts, p.P, st, gamma_offset, odd_phase)

                def read_frame(f: int, ts: Any = p.ts) -> np.ndarray:
                    what = f"tilt image {f + 1} of tomogram '{ts.name}'"
                    return reader.read(*ts.frames[f], what=what)  # type: ignore[no-any-return]

                for n in backproject(
                    p.ts, read_frame, p.geo, half_all[p.particles], terms, st, acc,
                    scale_ratio=px0 / p.ts.pixel_size,
                    optics_group=parts.optics_group[p.particles] - 1,
                ):  # fmt: skip
                    self.done += n
                    yield self._progress(ev.Stage.BACKPROJECTING, plan, tomo)
                    yield from self._maybe_preview(plan, acc, parts.has_half_sets)
                finished.append(p.ts.name)
                if n_t + 1 < len(plan.plans):
                    ckpt.save(finished, acc.data, acc.weight)
        return acc

    def finalise(
        self, inp: Inputs, plan: Plan, acc: Any, group: OutputGroup
    ) -> Events[np.ndarray | None]:
        """Every map staged in ``group`` as it is made; returns the FSC of the half maps
        (the whole box, as written), or None without half sets."""
        from ..core.fsc import fsc_spectra

        kept: dict[str, np.ndarray] = {}
        curve: list[np.ndarray] = []

        def emit(tag: str, kind: str, vol: Any) -> None:
            if kind != "spectrum":
                group.add_map(tag, kind, vol)
            elif tag == "half1":  # until half 2's: the FSC from the transforms, none anew
                kept[tag] = vol.astype(np.complex64)
            elif tag == "half2":
                curve.append(fsc_spectra(kept.pop("half1"), vol))

        self.faults("finalise")
        has_halves = inp.particles.has_half_sets
        for msg in finalise_steps(
            acc.data, acc.weight, self.params, plan.voxel_size, has_halves,
            plan.settings.threads, emit,
        ):  # fmt: skip
            yield self._progress(ev.Stage.FINALISING, plan, message=msg)
        return curve[0] if curve else None

    def write(self, inp: Inputs, plan: Plan, group: OutputGroup) -> Events[dict[str, Path]]:
        yield self._progress(ev.Stage.WRITING, plan, message=f"writing maps to {self.out_dir}")
        self.faults("write")
        files = group.commit(inp, inp.particles.has_half_sets, self.command)
        if self.preview is not None:  # (before temp/ is removed, which must be empty)
            self.preview.remove()
        clear_checkpoints(self.out_dir / "temp")
        return files

    # ------------------------------------------------------------------ helpers
    def _agreed(self, stage: Events[T]) -> Events[T]:
        """Run a stage; under MPI every rank then learns whether any rank failed in it."""
        try:
            value = yield from stage
        except Exception as e:
            self.comm.agree(e)
            raise
        self.comm.agree(None)
        return value

    def _elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def _progress(
        self, stage: ev.Stage, plan: Plan, tomo: tuple[TomoPlan, int] | None = None,
        message: str = "",
    ) -> ev.Progress:  # fmt: skip
        p, index = tomo if tomo is not None else (None, 0)
        if tomo is not None and not message:
            message = f"tomogram {index}/{len(plan.plans)}: {p.ts.name}"  # type: ignore[union-attr]
        return ev.Progress(
            stage, self.done, plan.total, p.ts.name if p is not None else "", index,
            len(plan.plans), message, self._elapsed(), voxel_size=plan.voxel_size,
        )  # fmt: skip

    def _maybe_preview(self, plan: Plan, acc: Any, half_sets: bool) -> Events[None]:
        if self.preview is None or not self.preview.due() or self.done == 0:
            return
        vol = preview_map(acc.data, acc.weight, self.params, plan.voxel_size, plan.settings.threads)
        yield self.preview.publish(vol, plan.voxel_size, self.done, plan.total)

    def _checkpoints(self, inp: Inputs) -> Checkpoints | NoCheckpoints:
        if self.params.no_backup:
            return NoCheckpoints()
        return Checkpoints(
            self.out_dir / "temp",
            fingerprint(self.params, inp, self.comm.rank, self.comm.size, self.root),
            self.comm.rank,
            resume=self.params.only_do_unfinished,
        )

    def _check_abort(self) -> None:
        ctl = self.params.pipeline_control
        if ctl and Path(at(self.root, ctl), "RELION_JOB_ABORT_NOW").exists():
            raise Cancelled("aborted through RELION_JOB_ABORT_NOW")

    def _fsc(self, result: ev.Result, curve: np.ndarray | None) -> None:
        if curve is None:
            return
        empty = [h + 1 for h, n in enumerate(self._half_work) if n == 0]
        if empty:
            result.warnings.append(
                f"half set {empty[0]} has no particle-tilts (rlnRandomSubset): its map is "
                "empty and the half-map FSC is not available"
            )
            return
        from ..core.fsc import resolution_at

        result.fsc = curve
        result.resolution_0143 = resolution_at(result.fsc, 0.143, result.voxel_size)
        result.resolution_05 = resolution_at(result.fsc, 0.5, result.voxel_size)


def fingerprint(
    params: ReconstructParams, inp: Inputs, rank: int, size: int, root: str | None = None
) -> dict[str, Any]:
    """What a checkpoint must agree with to be resumed: the options that change the
    accumulated volumes, every input file (star files, the tilt-series files, the stacks:
    size and time) and the rank layout."""
    import os

    files = {}
    for name in input_files(params, inp, root, result_only=True):
        st = os.stat(name)
        files[name] = [st.st_size, st.st_mtime_ns]
    return {"params": params.fingerprint(), "files": files, "rank": rank, "size": size}


def check_tilt_images(
    plans: list[TomoPlan], reader: Any, threads: int = 1
) -> Generator[str, None, None]:
    """Every tilt image a particle is visible in must be readable and finite.

    A generator: yields the tomogram's name before each image (cancel points).
    ``threads`` images are checked at a time (numpy's sums release the GIL: at --j 2 a
    job's 41 tilts of 3710x3838 px took 0.28 s instead of 0.48, from the events'
    ``elapsed``); the first bad image in frame order is the one reported, whichever
    check ends first.
    """
    from collections import deque
    from concurrent.futures import Future, ThreadPoolExecutor

    jobs = [(p, int(f)) for p in plans for f in np.flatnonzero(p.geo.visible.any(axis=0))]

    def check(job: tuple[TomoPlan, int]) -> None:
        p, f = job
        path, idx = p.ts.frames[f]
        bad = reader.first_non_finite(
            path, idx, what=f"tilt image {f + 1} of tomogram '{p.ts.name}'"
        )
        if bad is not None:
            x, y = bad
            which = f"image {idx + 1}" if idx is not None else "the image"
            raise InputError(
                f"{path}: {which} (frame {f + 1} of tomogram '{p.ts.name}', {p.ts.source} "
                f"row {f + 1}) has a non-finite pixel at x={x}, y={y}"
            )

    threads = max(1, threads)
    pool = ThreadPoolExecutor(threads, thread_name_prefix="check")
    running: deque[Future[None]] = deque()  # the checks of jobs i, i + 1, ...
    try:
        for i, job in enumerate(jobs):
            while len(running) < threads and i + len(running) < len(jobs):
                running.append(pool.submit(check, jobs[i + len(running)]))
            yield job[0].ts.name
            running.popleft().result()
    finally:  # cancelled or failed: no new checks (a running one finishes on its own)
        pool.shutdown(wait=False, cancel_futures=True)


def run(params: ReconstructParams, **kwargs: Any) -> Events[ev.Result]:
    """Reconstruct (see :class:`Job` for the keyword arguments)."""
    return Job(params, **kwargs).run()


def run_to_completion(
    params: ReconstructParams, on_progress: Callable[[Any], None] | None = None, **kwargs: Any
) -> ev.Result:
    gen = run(params, **kwargs)
    try:
        while True:
            p = next(gen)
            if on_progress is not None:
                on_progress(p)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]
