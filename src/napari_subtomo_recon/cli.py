"""``subtomo-recon``: a drop-in for ``relion_tomo_reconstruct_particle``.

A RELION command line works after replacing only the program name: the same flags
(double dash, space-separated values), the GUI's extra flags (``--theme``,
``--pipeline_control``) tolerated, unknown flags refused.  Runs under ``mpirun -n N``
with mpi4py as the MPI binary does.

The flags, their values and the usage text come from the fields of
:class:`~napari_subtomo_recon.params.ReconstructParams`.  With ``SUBTOMO_EVENTS=stderr``
(the napari widget sets it) the program reports through :mod:`~napari_subtomo_recon.events`
instead of text.

Exit codes: 0 done, 1 bad input, 2 internal error (a defect), 3 cancelled, 4 environment
(no space, no permission, out of memory), 130 interrupted.
"""

from __future__ import annotations

import dataclasses
import os
import shlex
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from typing import Any, TextIO

from . import events as ev
from .errors import Cancelled, InputError, failure_kind
from .params import ReconstructParams, check_value, format_value, kind_of, parse_text, spec_of

# flags of the program itself, not job options
_OWN = {
    "--debug": "show a traceback on errors",
    "--help": "this text (also -h, --usage)",
    "--version": "the program's version",
}
_TOLERATED = ("--list_themes",)  # RELION's GUI programs accept it; nothing to list here

_SECTIONS = (
    ("Input", ("I/O",), False),
    ("Reconstruction", ("Average", "Helix"), False),
    ("Reconstruction (not in RELION's GUI)", ("Average",), True),
    ("Running", ("Running", None), None),
)


def _flags(cls: type[Any] = ReconstructParams) -> dict[str, dataclasses.Field[Any]]:
    return {spec_of(f).flag: f for f in dataclasses.fields(cls) if spec_of(f).flag}  # type: ignore[misc]


def parse_args(argv: list[str], cls: type[Any] = ReconstructParams) -> tuple[Any, dict[str, bool]]:
    """RELION-style flags into parameters, and the program's own options (``--debug``...).

    Every value is checked against its field's domain; errors quote the text as typed.
    """
    flags = _flags(cls)
    values: dict[str, Any] = {}
    extra = {"debug": False, "help": False, "version": False}
    seen: set[str] = set()
    k = 0
    while k < len(argv):
        arg = argv[k]
        k += 1
        if arg in ("-h", "--help", "--usage", "--version", "--debug"):
            extra[{"-h": "help", "--usage": "help"}.get(arg, arg[2:])] = True
            continue
        if arg in _TOLERATED:
            continue
        if not arg.startswith("--"):
            raise InputError(f"unexpected argument '{arg}' (flags look like --b 128)")
        if "=" in arg:
            raise InputError(f"{arg}: write RELION style, '{arg.split('=')[0]} VALUE' without '='")
        if arg in seen:
            raise InputError(f"{arg} given twice")
        seen.add(arg)
        f = flags.get(arg)
        if f is None:
            raise InputError(f"unknown flag {arg} (see subtomo-recon --help)")
        if kind_of(f) == "bool":
            values[f.name] = True
            continue
        if k >= len(argv) or (argv[k].startswith("--") and not _is_number(argv[k])):
            raise InputError(f"{arg} needs a value")
        raw = argv[k]
        k += 1
        try:
            value = parse_text(f, raw)
        except ValueError as e:
            raise InputError(f"{arg} {raw}: expected {e}") from None
        check_value(f.name, value, raw, cls)
        values[f.name] = value
    return cls(**values), extra


def _is_number(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False


def usage(cls: type[Any] = ReconstructParams) -> str:
    """The --help text, from the fields' flags, help texts and defaults."""
    lines = [
        "usage: subtomo-recon --i optimisation_set.star",
        "                     | --p particles.star --t tomograms.star [--mot motion.star]",
        "                     --o OUTDIR --b BOX [options]",
        "",
        "Reconstruct a subtomogram average from tilt series "
        "(RELION 5 relion_tomo_reconstruct_particle).",
    ]
    done: set[str] = set()
    for title, tabs, advanced in _SECTIONS:
        rows = []
        for f in dataclasses.fields(cls):
            s = spec_of(f)
            if not s.flag or f.name in done or s.tab not in tabs or f.name == "theme":
                continue
            if advanced is not None and s.advanced != advanced:
                continue
            done.add(f.name)
            rows.append(_usage_row(f))
        if rows:
            lines += ["", f"{title}:", *rows]
    lines += ["", "Program:", *(f"  {k:<24}{v}" for k, v in _OWN.items())]
    lines += ["Tolerated for RELION compatibility: --theme NAME, --list_themes"]
    return "\n".join(lines)


def _usage_row(f: dataclasses.Field[Any]) -> str:
    s = spec_of(f)
    head = f"  {s.flag}" + (f" {s.metavar or 'VALUE'}" if kind_of(f) != "bool" else "")
    text = s.help.split(". ")[0].rstrip(".").replace("\n", " ")
    if len(text) > 70:
        text = text[:67].rsplit(" ", 1)[0] + " …"
    if kind_of(f) != "bool" and f.default not in ("", None):
        text += f" [{format_value(f.default)}]"
    return f"{head:<26}{text}" if len(head) < 26 else f"{head}\n{'':26}{text}"


# --------------------------------------------------------------------------------------
# Reporting: text for a terminal, events for a parent process


class TextReporter:
    """A tqdm bar while backprojecting, then the summary (what RELION users read)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.bar: Any = None

    def progress(self, p: ev.Progress) -> None:
        if p.stage == ev.Stage.BACKPROJECTING:
            if self.bar is None:
                from tqdm import tqdm

                self.bar = tqdm(
                    total=p.total, unit="ptilt", dynamic_ncols=True, file=sys.stderr,
                    disable=not sys.stderr.isatty() and os.environ.get("SUBTOMO_PROGRESS") != "1",
                )  # fmt: skip
                if self.size > 1:
                    self.bar.set_postfix_str(f"rank 0 of {self.size}", refresh=False)
            self.bar.total = p.total
            self.bar.n = p.done
            self.bar.set_description(p.tomogram, refresh=False)
            self.bar.refresh()
            return
        self.close()
        if p.stage in (ev.Stage.FINALISING, ev.Stage.WRITING):
            print(p.message, file=sys.stderr)

    def preview(self, p: ev.Preview) -> None:
        pass

    def result(self, r: ev.Result) -> None:
        self.close()
        for w in r.warnings:
            print(f"warning: {w}", file=sys.stderr)
        rate = r.particle_tilts / r.elapsed if r.elapsed > 0 else 0.0
        print(
            f"{r.particles} particles, {r.particle_tilts} particle-tilts in "
            f"{r.elapsed:.1f} s ({rate:.0f} particle-tilts/s)"
        )
        if r.resolution_0143 is not None:
            print(
                f"half-map FSC (unmasked): {r.resolution_0143:.2f} A at 0.143, "
                f"{r.resolution_05:.2f} A at 0.5"
            )
        for name in ("merged", "half1", "half2"):
            if name in r.files:
                print(f"{name}: {r.files[name]}")

    def failure(self, f: ev.Failure, debug: bool) -> None:
        self.close()
        if f.reason == ev.FailureKind.CANCELLED:
            print(f"subtomo-recon: cancelled: {f.message}", file=sys.stderr)
        else:
            print(f"subtomo-recon: error: {f.message}", file=sys.stderr)
        if debug and f.detail:
            print(f.detail, file=sys.stderr, end="")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class EventReporter:
    """One :mod:`events` line per event on ``stream``; progress at most ~5 per second."""

    INTERVAL = 0.2

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.last = -1e9
        self.key: tuple[Any, ...] | None = None

    def emit(self, event: ev.Event) -> None:
        print(ev.encode(event), file=self.stream, flush=True)

    def progress(self, p: ev.Progress) -> None:
        now = time.perf_counter()
        key = (p.stage, p.tomogram_index)
        if key != self.key or now - self.last >= self.INTERVAL or p.stage == ev.Stage.DONE:
            self.key, self.last = key, now
            self.emit(p)

    def preview(self, p: ev.Preview) -> None:
        self.emit(dataclasses.replace(p, path=p.path.absolute()))

    def result(self, r: ev.Result) -> None:
        """Paths are absolute: the reader does not share our working directory."""
        for w in r.warnings:
            self.emit(ev.Warning(w))
        files = {k: p.absolute() for k, p in r.files.items()}
        self.emit(dataclasses.replace(r, output_dir=r.output_dir.absolute(), files=files))

    def failure(self, f: ev.Failure, debug: bool) -> None:
        self.emit(f)

    def close(self) -> None:
        pass


# --------------------------------------------------------------------------------------
# main


def _terminate(signum: int, frame: Any) -> None:
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


def failure_of(e: BaseException, debug: bool = False) -> ev.Failure:
    """How an exception ends a job: the kind (exit code, :func:`~.errors.failure_kind`) and one
    line."""
    kind = ev.FailureKind(failure_kind(e))
    detail = "".join(traceback.format_exception(e)) if debug else ""
    if kind is ev.FailureKind.INTERNAL:
        hint = "" if debug else " (an internal error; --debug shows the traceback)"
        detail = detail or "".join(traceback.format_exception(e))
        return ev.Failure(kind, f"{type(e).__name__}: {e}{hint}", detail)
    if isinstance(e, MemoryError):
        return ev.Failure(kind, "out of memory (try a smaller --b or --mem)", detail)
    if isinstance(e, OSError):  # (an errno: the machine's)
        where = f"{e.filename}: " if e.filename else ""
        return ev.Failure(kind, f"{where}{e.strerror or e}", detail)
    return ev.Failure(kind, str(e), detail)


def helper_main(
    name: str,
    work: Callable[[Callable[[ev.Progress], None]], ev.Result],
    summary: Callable[[ev.Result], str],
) -> int:
    """A helper program of the widget (kernel warm-up, sample data): ``work(report)``'s
    progress and result, or its failure, as events with ``SUBTOMO_EVENTS=stderr``, else as
    text.  Returns the exit code."""
    reporter = EventReporter(sys.stderr) if os.environ.get(ev.ENV) == "stderr" else None

    def report(p: ev.Progress) -> None:
        if reporter is not None:
            reporter.progress(p)
        else:
            print(p.message, file=sys.stderr)

    try:
        result = work(report)
    except Exception as e:
        failure = failure_of(e, debug=True)
        if reporter is not None:
            reporter.failure(failure, True)
        else:
            print(f"{name}: error: {failure.message}", file=sys.stderr)
        return failure.exit_code
    if reporter is not None:
        reporter.result(result)
    else:
        print(summary(result))
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    _keep_freed_memory()
    if threading.current_thread() is threading.main_thread():
        # a scheduler's or the widget's SIGTERM ends the job like RELION_JOB_ABORT_NOW
        signal.signal(signal.SIGTERM, _terminate)
    debug = "--debug" in argv
    events = os.environ.get(ev.ENV) == "stderr"
    reporter: TextReporter | EventReporter = (
        EventReporter(sys.stderr) if events else TextReporter(1)
    )
    rank = 0
    try:
        params, extra = parse_args(argv)
        if extra["help"] or not argv:
            print(usage())
            return 0
        if extra["version"]:
            from . import __version__

            print(f"subtomo-recon {__version__}")
            return 0
        comm = mpi_communicator()
        rank = comm.Get_rank() if comm is not None else 0
        if isinstance(reporter, TextReporter):
            reporter.size = comm.Get_size() if comm is not None else 1
        _run(params, argv, comm, rank, reporter)
        _pipeline_status(argv, "success")
        return 0
    except KeyboardInterrupt:
        reporter.close()
        print("subtomo-recon: interrupted; no maps were written", file=sys.stderr)
        return 130
    except Exception as e:
        failure = failure_of(e, debug)
        if rank == 0 or failure.reason == ev.FailureKind.CANCELLED:
            reporter.failure(failure, debug)
        status = "aborted" if failure.reason == ev.FailureKind.CANCELLED else "failure"
        _pipeline_status(argv, status)
        return failure.exit_code


def _pipeline_status(argv: list[str], status: str) -> None:
    """RELION's pipeliner learns how a job ended from a file in --pipeline_control."""
    if "--pipeline_control" in argv:
        k = argv.index("--pipeline_control")
        if k + 1 < len(argv):
            from .job.relion import mark_status

            mark_status(argv[k + 1], status)


def mpi_communicator() -> Any:
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


def _preview_seconds() -> float | None:
    try:
        v = float(os.environ.get(ev.PREVIEW_ENV, ""))
    except ValueError:
        return None
    return v if v > 0 else None


def _run(
    params: ReconstructParams,
    argv: list[str],
    comm: Any,
    rank: int,
    reporter: TextReporter | EventReporter,
) -> None:
    from .job import run

    events = isinstance(reporter, EventReporter)
    gen = run(
        params,
        command=shlex.join(["subtomo-recon", *argv]),
        comm=comm,
        preview_interval=_preview_seconds() if events else None,
    )
    result = _drive(gen, reporter if rank == 0 else None)
    if rank == 0 and result is not None:
        reporter.result(result)


def _drive(gen: Iterator[Any], reporter: TextReporter | EventReporter | None) -> Any:
    try:
        while True:
            event = next(gen)
            if reporter is None:
                continue
            if isinstance(event, ev.Preview):
                reporter.preview(event)
            else:
                reporter.progress(event)
    except StopIteration as stop:
        return stop.value
    finally:
        if reporter is not None:
            reporter.close()
