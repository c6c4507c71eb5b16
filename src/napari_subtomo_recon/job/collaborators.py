"""Small objects the runner is given: MPI agreement and reduction, checkpoints, previews.

Each has a do-nothing (or single-process) form, so the runner reads the same with or
without MPI, checkpoints or a live preview, and tests can pass their own.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from .. import events as ev
from ..errors import Cancelled, EnvironmentFault, InputError, failure_kind


class Comm(Protocol):
    """What the runner needs of MPI."""

    rank: int
    size: int

    def agree(self, err: BaseException | None) -> None:
        """Every rank learns whether any rank failed; all stop with the same error."""

    def reduce(self, data: np.ndarray, weight: np.ndarray) -> None:
        """Sum the ranks' accumulators onto rank 0 (in place)."""


class LocalComm:
    """One process: an error is raised as it is, nothing to sum."""

    rank = 0
    size = 1

    def agree(self, err: BaseException | None) -> None:
        if err is not None:
            raise err

    def reduce(self, data: np.ndarray, weight: np.ndarray) -> None:
        pass


class MpiComm:
    """An mpi4py communicator."""

    def __init__(self, comm: Any) -> None:
        self.comm = comm
        self.rank = int(comm.Get_rank())
        self.size = int(comm.Get_size())

    def agree(self, err: BaseException | None) -> None:
        msgs = self.comm.allgather(
            None if err is None else (failure_kind(err), str(err) or repr(err))
        )
        cancels = [m[1] for m in msgs if m is not None and m[0] == "cancelled"]
        if cancels:  # a cancel anywhere cancels everywhere
            raise Cancelled(cancels[0]) from err
        for r, m in enumerate(msgs):
            if m is not None:
                # every rank stops with the first failing rank's message, and its kind
                # (so its exit code): a full disk stays exit 4, a defect exit 2
                cls = {"environment": EnvironmentFault, "input": InputError}.get(m[0], RuntimeError)
                raise cls(f"MPI rank {r}: {m[1]}") from err

    def reduce(self, data: np.ndarray, weight: np.ndarray) -> None:
        """In slabs of 16 M elements, to bound the buffers."""
        from mpi4py import MPI

        for arr in (data, weight):
            flat = arr.reshape(-1)
            step = 1 << 24
            for a in range(0, flat.size, step):
                chunk = np.ascontiguousarray(flat[a : a + step])
                if self.rank == 0:
                    self.comm.Reduce(MPI.IN_PLACE, chunk, op=MPI.SUM, root=0)
                    flat[a : a + step] = chunk
                else:
                    self.comm.Reduce(chunk, None, op=MPI.SUM, root=0)


def comm_of(comm: Any) -> Comm:
    """``None`` or an mpi4py communicator (or already a :class:`Comm`)."""
    if comm is None:
        return LocalComm()
    if isinstance(comm, LocalComm | MpiComm):
        return comm
    return MpiComm(comm)


def clear_checkpoints(folder: Path) -> None:
    """Remove every rank's checkpoint files (the job has finished)."""
    from ..io.checkpoint import Checkpoint

    Checkpoint(folder, {}).clear_all()


class NoCheckpoints:
    """--no_backup: nothing saved, nothing to resume."""

    def resume(self, data: np.ndarray, weight: np.ndarray) -> list[str]:
        return []

    def save(self, finished: list[str], data: np.ndarray, weight: np.ndarray) -> None:
        pass


class Checkpoints:
    """Per-tomogram checkpoints in ``<o>/temp`` (see :mod:`..io.checkpoint`)."""

    def __init__(self, folder: Path, fingerprint: dict[str, Any], rank: int, resume: bool):
        from ..io.checkpoint import Checkpoint

        self.store = Checkpoint(folder, fingerprint, rank)
        self.resuming = resume

    def resume(self, data: np.ndarray, weight: np.ndarray) -> list[str]:
        """The finished tilt series (their sums loaded into data and weight)."""
        if not self.resuming:
            return []
        state = self.store.load()
        if state is None:
            return []
        finished, data[:], weight[:] = state
        return finished

    def save(self, finished: list[str], data: np.ndarray, weight: np.ndarray) -> None:
        self.store.save(finished, data, weight)


class PreviewWriter:
    """Every ``interval`` seconds, the partial merged map as an MRC file (atomically), for
    a viewer in another process; the event carries the path."""

    def __init__(self, path: Path, interval: float) -> None:
        self.path = Path(path)
        self.interval = float(interval)
        self.last = time.perf_counter()

    def due(self) -> bool:
        return time.perf_counter() - self.last >= self.interval

    def publish(self, volume: np.ndarray, voxel_size: float, done: int, total: int) -> ev.Preview:
        from ..display import display_levels
        from ..io.mrc import write_map

        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_map(self.path, volume, voxel_size)
        self.last = time.perf_counter()
        return ev.Preview(self.path, voxel_size, done, total, display_levels(volume))

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)
        try:
            self.path.parent.rmdir()  # temp/, unless checkpoints are kept there
        except OSError:
            pass
