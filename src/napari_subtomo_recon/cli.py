"""``subtomo-recon``: a drop-in for ``relion_tomo_reconstruct_particle``.

A RELION command line works after replacing only the program name: the same
flags (single dash-dash, space-separated values), the GUI's extra flags
(``--theme``, ``--pipeline_control``) tolerated, unknown flags refused.
Runs under ``mpirun -n N`` with mpi4py as the MPI binary does.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import sys
import threading
import traceback
from dataclasses import fields

from .errors import Cancelled, InputError
from .job import ReconstructParams

USAGE = """usage: subtomo-recon --i optimisation_set.star
                     | --p particles.star --t tomograms.star [--mot motion.star]
                     --o OUTDIR --b BOX [options]

Reconstruct a subtomogram average from tilt series (RELION 5 relion_tomo_reconstruct_particle).

Input:
  --i FILE            optimisation set (entries below override it)
  --p FILE            particle set
  --t FILE            tomogram set
  --mot FILE          trajectory set (particle motion)
Output:
  --o DIR             output directory (created)
Reconstruction:
  --b N               box size, binned pixels (even)
  --crop N            also write maps cropped to N (if 0 < N < box)           [-1]
  --bin X             binning factor (real-valued)                             [1]
  --SNR X             Wiener SNR constant; <= 0: RELION's heuristic           [-1]
  --sym NAME          point group (C1, C6, D2, T, O, I2, ...) or symmetry file [C1]
  --nr_helical_asu N  number of helical asymmetric units                       [1]
  --helical_twist X   helical twist, degrees (+ = right-handed)                [0]
  --helical_rise X    helical rise, Angstrom                                   [0]
  --whiten            whiten the noise by flattening the power spectrum
  --no_ctf            do not apply CTFs (nor dose weights)
  --taper X           taper against the sphere by this many pixels            [10]
  --no_circle_crop    no circular mask on the 2D particle images
  --cutoff_fract X    ignore frequencies whose dose weight is below X       [0.01]
  --exact             RELION's per-particle extraction (slower; the fast path is the default)
  --prebin MODE       fast path: bin each tilt once first: auto (when it pays off), always, never
Running:
  --j N               threads                                                   [6]
  --j_in N, --j_out N accepted for compatibility; --j sets the threads           [3, 2]
  --mem GB            memory limit for the accumulators (fewer copies)         [-1]
  --only_do_unfinished  resume from the per-tomogram checkpoints in OUTDIR/temp
  --no_backup         do not write per-tomogram checkpoints
  --no_recon          only backproject (benchmarking); no maps
  --debug             show a traceback on errors
Tolerated for RELION compatibility: --theme NAME, --pipeline_control DIR, --list_themes
"""

_BOOL = {f.name for f in fields(ReconstructParams) if f.type in ("bool", bool)}
_VALUED = {f.name: f.type for f in fields(ReconstructParams) if f.name not in _BOOL}
_CONVERT = {"int": int, "float": float, "str": str, int: int, float: float, str: str}


def parse_args(argv: list[str]) -> tuple[ReconstructParams, dict]:
    """Parse RELION-style flags into parameters (and extra options like --debug)."""
    params = ReconstructParams()
    extra = {"debug": False, "help": False, "version": False}
    seen: set[str] = set()
    k = 0
    while k < len(argv):
        arg = argv[k]
        if arg in ("-h", "--help", "--usage"):
            extra["help"] = True
            k += 1
            continue
        if arg == "--version":
            extra["version"] = True
            k += 1
            continue
        if arg == "--debug":
            extra["debug"] = True
            k += 1
            continue
        if arg == "--list_themes":
            k += 1
            continue
        if not arg.startswith("--"):
            raise InputError(f"unexpected argument '{arg}' (flags look like --b 128)")
        name = arg[2:]
        if "=" in name:
            raise InputError(
                f"{arg}: write RELION style, '--{name.split('=')[0]} VALUE' without '='"
            )
        if name in seen:
            raise InputError(f"--{name} given twice")
        seen.add(name)
        if name in _BOOL:
            setattr(params, name, True)
            k += 1
            continue
        if name not in _VALUED:
            raise InputError(f"unknown flag --{name} (see subtomo-recon --help)")
        if k + 1 >= len(argv) or (argv[k + 1].startswith("--") and not _is_number(argv[k + 1])):
            raise InputError(f"--{name} needs a value")
        raw = argv[k + 1]
        conv = _CONVERT[_VALUED[name]]
        try:
            value = conv(raw)
        except ValueError:
            kind = {int: "an integer", float: "a number"}.get(conv, "a value")
            raise InputError(f"--{name} {raw}: expected {kind}") from None
        setattr(params, name, value)
        k += 2
    return params, extra


def _is_number(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False


def _progress_bar(total_hint: int = 0):
    from tqdm import tqdm

    return tqdm(
        total=total_hint,
        unit="ptilt",
        dynamic_ncols=True,
        file=sys.stderr,
        disable=not sys.stderr.isatty() and os.environ.get("SUBTOMO_PROGRESS") != "1",
    )


def _terminate(signum, frame):
    # one cancel is enough: mpirun forwards a second SIGTERM to ranks already stopping
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise Cancelled(f"stopped by signal {signum}")


def _keep_freed_memory() -> None:
    """Let glibc reuse freed blocks instead of returning them to the kernel.

    Each tilt allocates and frees arrays of tens of MB (padded image, its transform);
    by default glibc maps and unmaps each one, and refilling fresh pages cost ~20% of
    the run in page faults (measured: 12 s of system time in a 57 s bin-6 job, 4 s
    after this) for ~10% more peak memory.  Set for command-line processes only.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 2**30)  # M_MMAP_THRESHOLD: blocks below 1 GiB from the heap
        libc.mallopt(-1, 2**31 - 1)  # M_TRIM_THRESHOLD: keep freed heap memory
        libc.mallopt(-2, 2**28)  # M_TOP_PAD: grow the heap in 256 MiB steps
    except (OSError, AttributeError):  # not glibc (e.g. musl): keep the defaults
        pass


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    _keep_freed_memory()
    if threading.current_thread() is threading.main_thread():
        # a scheduler's or the widget's SIGTERM ends the job like RELION_JOB_ABORT_NOW
        signal.signal(signal.SIGTERM, _terminate)
    debug = "--debug" in argv
    try:
        params, extra = parse_args(argv)
        if extra["help"] or not argv:
            print(USAGE)
            return 0
        if extra["version"]:
            from . import __version__

            print(f"subtomo-recon {__version__}")
            return 0
        return _run(params, argv)
    except InputError as e:
        if _RANK == 0:  # under MPI every rank stops with the same error; one prints it
            print(f"subtomo-recon: error: {e}", file=sys.stderr)
        _pipeline_status(argv, "RELION_JOB_EXIT_FAILURE")
        if debug:
            traceback.print_exc()
        return 1
    except Cancelled as e:
        print(f"subtomo-recon: cancelled: {e}", file=sys.stderr)
        _pipeline_status(argv, "RELION_JOB_EXIT_ABORTED")
        return 3
    except KeyboardInterrupt:
        print("subtomo-recon: interrupted; no maps were written", file=sys.stderr)
        return 130
    except MemoryError:
        print("subtomo-recon: error: out of memory (try a smaller --b or --mem)", file=sys.stderr)
        _pipeline_status(argv, "RELION_JOB_EXIT_FAILURE")
        return 1
    except Exception as e:  # a defect, not a user error: one line, the traceback with --debug
        if _RANK == 0:
            hint = "" if debug else " (an internal error; --debug shows the traceback)"
            print(f"subtomo-recon: error: {type(e).__name__}: {e}{hint}", file=sys.stderr)
            if debug:
                traceback.print_exc()
        _pipeline_status(argv, "RELION_JOB_EXIT_FAILURE")
        return 2


def _pipeline_status(argv: list[str], name: str) -> None:
    """RELION's pipeliner learns how a job ended from a file in the --pipeline_control folder."""
    if "--pipeline_control" in argv:
        k = argv.index("--pipeline_control")
        if k + 1 < len(argv):
            try:
                os.makedirs(argv[k + 1], exist_ok=True)
                open(os.path.join(argv[k + 1], name), "w").close()
            except OSError:
                pass


_RANK = 0


def mpi_communicator():
    """MPI.COMM_WORLD when started by mpirun with more than one rank, else None."""
    size = 1
    for var in ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE", "MPI_LOCALNRANKS"):
        if os.environ.get(var, "").isdigit():
            size = int(os.environ[var])
            break
    if size <= 1:
        return None
    try:
        from mpi4py import MPI
    except ImportError:
        raise InputError(
            f"started with {size} MPI ranks but mpi4py is missing: "
            "pip install 'napari-subtomo-recon[mpi]'"
        ) from None
    return MPI.COMM_WORLD if MPI.COMM_WORLD.Get_size() > 1 else None


def _json_progress(p) -> None:
    """One line per update for a parent process (the napari widget) to parse."""
    rec = {"stage": p.stage, "done": p.done, "total": p.total, "tomogram": p.tomogram,
           "tomogram_index": p.tomogram_index, "tomogram_count": p.tomogram_count,
           "message": p.message, "voxel_size": p.voxel_size}  # fmt: skip
    print("@progress " + json.dumps(rec), file=sys.stderr, flush=True)


def _run(params: ReconstructParams, argv: list[str]) -> int:
    from .job import run

    global _RANK
    comm = mpi_communicator()
    rank = _RANK = comm.Get_rank() if comm is not None else 0
    as_json = os.environ.get("SUBTOMO_PROGRESS") == "json"
    bar = None
    gen = run(params, command=shlex.join(["subtomo-recon", *argv]), comm=comm)
    try:
        while True:
            p = next(gen)
            if rank != 0:
                continue
            if as_json:
                _json_progress(p)
                continue
            if p.stage == "backprojecting":
                if bar is None:
                    bar = _progress_bar(p.total)
                    if comm is not None:
                        bar.set_postfix_str(f"rank 0 of {comm.Get_size()}", refresh=False)
                bar.total = p.total
                bar.n = p.done
                bar.set_description(p.tomogram, refresh=False)
                bar.refresh()
            elif p.stage != "reading" and bar is not None:
                bar.close()
                bar = None
            if p.stage in ("finalising", "writing"):
                print(p.message, file=sys.stderr)
    except StopIteration as stop:
        result = stop.value
    finally:
        if bar is not None:
            bar.close()
    if rank != 0:
        return 0
    for w in result.warnings:
        print(f"warning: {w}", file=sys.stderr)
    rate = result.particle_tilts / result.elapsed if result.elapsed > 0 else 0.0
    print(
        f"{result.particles} particles, {result.particle_tilts} particle-tilts in "
        f"{result.elapsed:.1f} s ({rate:.0f} particle-tilts/s)"
    )
    if result.resolution_0143 is not None:
        print(
            f"half-map FSC (unmasked): {result.resolution_0143:.2f} A at 0.143, "
            f"{result.resolution_05:.2f} A at 0.5"
        )
    for name in ("merged", "half1", "half2"):
        if name in result.files:
            print(f"{name}: {result.files[name]}")
    if params.pipeline_control:
        _pipeline_status(["--pipeline_control", params.pipeline_control], "RELION_JOB_EXIT_SUCCESS")
    return 0
