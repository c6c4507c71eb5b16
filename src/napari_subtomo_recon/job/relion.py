"""RELION job bookkeeping: job.star, the command, note.txt, exit-status files, Continue!.

RELION's GUI describes a job by its *job options* (strings in ``<job>/job.star``), builds
one command line from them (``getCommandsTomoReconPartJob``), appends the command to
``note.txt``, and learns how the job ended from ``RELION_JOB_EXIT_*`` files.  Here the same,
from :class:`~napari_subtomo_recon.params.ReconstructParams`:

- :func:`job_star_options` / :func:`params_from_job_star`: parameters <-> job.star strings
  (our options that RELION's GUI lacks travel in its *Additional arguments*, so RELION runs
  the same command from our job.star, and we read them back into their fields);
- :func:`build_command`: the flags RELION's GUI writes, in its order, with our program;
- :func:`start`, :func:`mark_status`, :func:`can_continue`, ...: the job folder.

Qt-free: the command line (``--pipeline_control``) and the napari widget both call it.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import shlex
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..io.atomic import fault, write_text_atomic
from ..io.checkpoint import has_checkpoints
from ..io.jobstar import JOB_TYPE_LABEL, JobStar, read_job_star, write_job_star
from ..params import (
    ReconstructParams,
    check_value,
    field_map,
    format_value,
    parse_text,
    spec_of,
)

JOB_DIRNAME = "Reconstruct"
PROGRAM = "subtomo-recon"
STATUS_FILES = ("RELION_JOB_EXIT_SUCCESS", "RELION_JOB_EXIT_FAILURE", "RELION_JOB_EXIT_ABORTED")
_STATUS = dict(zip(("success", "failure", "aborted"), STATUS_FILES, strict=True))

__all__ = [
    "JOB_TYPE_LABEL",
    "JobCommand",
    "build_command",
    "can_continue",
    "has_checkpoints",
    "check",
    "job_star_options",
    "mark_status",
    "params_from_job_star",
    "read_job",
    "start",
    "write_job",
]


def _by_job_option(cls: type[Any]) -> dict[str, dataclasses.Field[Any]]:
    return {s.job_option: f for f in dataclasses.fields(cls) if (s := spec_of(f)).job_option}


def _folded(cls: type[Any]) -> list[dataclasses.Field[Any]]:
    """Form fields with a flag but no RELION job option: they travel in other_args."""
    return [
        f
        for f in dataclasses.fields(cls)
        if spec_of(f).flag and spec_of(f).job_option is None and spec_of(f).tab is not None
        and f.name != "output_dir"
    ]  # fmt: skip


def _flag_tokens(f: dataclasses.Field[Any], value: Any) -> list[str]:
    flag = spec_of(f).flag
    assert flag is not None
    if isinstance(value, bool):
        return [flag] if value else []
    return [flag, format_value(value)]


def _changed(params: ReconstructParams, f: dataclasses.Field[Any]) -> bool:
    return bool(getattr(params, f.name) != f.default)


# --------------------------------------------------------------------------------------
# job.star <-> parameters


def folded_args(params: ReconstructParams) -> list[str]:
    """Our options that differ from their defaults, as flags (for other_args)."""
    out: list[str] = []
    for f in _folded(type(params)):
        if _changed(params, f):
            out += _flag_tokens(f, getattr(params, f.name))
    return out


def job_star_options(params: ReconstructParams) -> dict[str, str]:
    """The RELION job options as job.star strings, alphabetical (RELION's std::map)."""
    out: dict[str, str] = {}
    for key, f in _by_job_option(type(params)).items():
        out[key] = format_value(getattr(params, f.name))
    out.update(params.qsub_extras)
    other = shlex.join(folded_args(params))
    if params.other_args.strip():
        other = f"{other} {params.other_args.strip()}".strip()
    out["other_args"] = other
    return dict(sorted(out.items()))


def params_from_job_star(
    job: JobStar,
    source: str = "job.star",
    env: Mapping[str, str] | None = None,
    cls: type[Any] = ReconstructParams,
) -> tuple[Any, list[str]]:
    """Parameters from job.star strings (RELION GUI defaults for what is missing), and
    notes on what was ignored.  A value outside its domain is an InputError naming the
    file, the option and the text."""
    params = cls.for_gui(env)
    by_option = _by_job_option(cls)
    values: dict[str, Any] = {}
    extras = dict(params.qsub_extras)
    notes: list[str] = []
    for key, text in job.options.items():
        if re.fullmatch(r"qsub_extra\d+", key):
            extras[key] = text
            continue
        f = by_option.get(key)
        if f is None:
            notes.append(f"{source}: ignoring unknown job option '{key}'")
            continue
        try:
            value = parse_text(f, text)
        except ValueError as e:
            raise InputError(f"{source}: {key} '{text}': expected {e}") from None
        problem = spec_of(f).domain.problem(value)
        if problem:
            raise InputError(f"{source}: {key} '{text}': {problem}")
        values[f.name] = value
    params = params.replace(**values, qsub_extras=extras)
    return lift_folded(params), notes


def lift_folded(params: ReconstructParams) -> ReconstructParams:
    """Move our options out of other_args into their fields (inverse of job_star_options);
    anything else stays in other_args as written."""
    try:
        tokens = shlex.split(params.other_args)
    except ValueError:
        return params
    by_flag = {spec_of(f).flag: f for f in _folded(type(params))}
    values: dict[str, Any] = {}
    rest: list[str] = []
    k = 0
    while k < len(tokens):
        f = by_flag.get(tokens[k])
        if f is None or f.name in values:
            rest.append(tokens[k])
            k += 1
            continue
        if isinstance(f.default, bool):
            values[f.name] = True
            k += 1
            continue
        if k + 1 < len(tokens):
            try:
                value = parse_text(f, tokens[k + 1])
                check_value(f.name, value, tokens[k + 1], type(params))
            except (ValueError, InputError):
                pass
            else:
                values[f.name] = value
                k += 2
                continue
        rest.append(tokens[k])
        k += 1
    return params.replace(**values, other_args=shlex.join(rest))


def read_job(
    path: str | os.PathLike[str], cls: type[Any] = ReconstructParams
) -> tuple[Any, JobStar, list[str]]:
    """A Reconstruct particle job.star (or its folder): parameters, the file, notes.

    The project folder is the one the job folder belongs to (``<project>/<Type>/jobNNN``).
    """
    job = read_job_star(path)
    file = Path(path)
    file = file / "job.star" if file.is_dir() else file
    params, notes = params_from_job_star(job, str(file), cls=cls)
    return params.replace(project_dir=str(project_for(file))), job, notes


def write_job(job_dir: str | os.PathLike[str], params: ReconstructParams,
              is_continue: bool = False) -> Path:  # fmt: skip
    return write_job_star(job_dir, JobStar(is_continue=is_continue,
                                           options=job_star_options(params)))  # fmt: skip


def project_for(path: str | os.PathLike[str]) -> Path:
    """The RELION project folder of a file or job folder.

    Files of a ``<Type>/jobNNN/`` folder belong to the folder two levels up; any other
    file to its own folder (e.g. the sample data set).
    """
    p = Path(path).resolve()
    d = p if p.is_dir() else p.parent
    if re.fullmatch(r"job\d+", d.name):
        return d.parent.parent
    return d


# --------------------------------------------------------------------------------------
# The command (RELION's getCommandsTomoReconPartJob + prepareFinalCommand)


@dataclass
class JobCommand:
    args: list[str]  # flags only, program name left out
    nr_mpi: int = 1
    queue: bool = False
    mpirun: str = "mpirun"
    program: str = PROGRAM

    def tokens(self) -> list[str]:
        """The command as RELION's GUI builds it (mpirun only when not queueing)."""
        head = [self.program]
        if self.nr_mpi > 1 and not self.queue:
            head = [*shlex.split(self.mpirun), "-n", str(self.nr_mpi), self.program]
        return head + self.args

    def __str__(self) -> str:
        return shlex.join(self.tokens())


def with_slash(d: str) -> str:
    d = d.strip()
    return d if not d or d.endswith("/") else d + "/"


def _io_flags(p: ReconstructParams) -> list[str]:
    if not p.use_direct_entries:
        if not p.optimisation_set:
            raise InputError(
                "no optimisation set is given, and direct entries are not used (I/O tab)"
            )
        return ["--i", p.optimisation_set]
    if p.optimisation_set:
        raise InputError(
            "direct entries are used, but the optimisation set entry is not empty (I/O tab)"
        )
    if not p.tomograms:
        raise InputError("no tomogram set is given (I/O tab)")
    if not p.particles:
        raise InputError("no particle set is given (I/O tab)")
    out = ["--p", p.particles, "--t", p.tomograms]
    return out + (["--mot", p.trajectories] if p.trajectories else [])


def command_args(p: ReconstructParams, is_continue: bool = False) -> list[str]:
    """The flags RELION's GUI writes for this job, in its order, then ours and the
    additional arguments.  InputError with RELION's message for inconsistent I/O entries."""
    out = with_slash(p.output_dir)
    args = _io_flags(p)
    args += ["--theme", "classic", "--o", out, "--b", format_value(p.box_size)]
    if p.crop_size > 0:
        args += ["--crop", format_value(p.crop_size)]
    args += ["--bin", format_value(p.binning)]
    if p.snr > 0:
        args += ["--SNR", format_value(p.snr)]
    if p.do_helix:
        args += ["--nr_helical_asu", format_value(p.helical_units)]
        args += ["--helical_twist", format_value(p.helical_twist)]
        args += ["--helical_rise", format_value(p.helical_rise)]
    threads = format_value(p.threads)
    args += ["--j", threads, "--j_out", threads, "--j_in", "1"]
    if is_continue:
        args.append("--only_do_unfinished")
    args += ["--sym", p.symmetry.strip()]
    args += folded_args(p)
    try:
        args += shlex.split(p.other_args)
    except ValueError as e:
        raise InputError(f"Additional arguments: {e}") from None
    return args + ["--pipeline_control", out]


def build_command(
    p: ReconstructParams, is_continue: bool = False, env: Mapping[str, str] | None = None
) -> JobCommand:
    env = os.environ if env is None else env
    return JobCommand(
        args=command_args(p, is_continue),
        nr_mpi=p.nr_mpi,
        queue=p.do_queue,
        mpirun=env.get("RELION_MPIRUN", "mpirun"),
    )


def run_params(p: ReconstructParams, is_continue: bool = False) -> ReconstructParams:
    """The parameters the program runs with for this job: what ``subtomo-recon`` makes of
    :func:`command_args` (the GUI's switches applied, the additional arguments parsed)."""
    from ..cli import parse_args

    params: ReconstructParams = parse_args(command_args(p, is_continue), type(p))[0]
    return params


def check(
    p: ReconstructParams,
    is_continue: bool = False,
    env: Mapping[str, str] | None = None,
) -> str | None:
    """None if the job can start; else the first problem, as one line."""
    env = os.environ if env is None else env
    try:
        p.check()
        cmd = build_command(p, is_continue, env)
        run_params(p, is_continue).check_runnable()
    except InputError as e:
        return str(e)
    project = Path(p.project_dir or ".")
    if p.project_dir and not project.is_dir():
        return f"Project directory {project}: no such folder"
    names = ["particles", "tomograms", "trajectories"] if p.use_direct_entries else [
        "optimisation_set"]  # fmt: skip
    for name in names:
        rel = str(getattr(p, name) or "")
        if rel and not (project / rel).is_file():
            label = spec_of(field_map(type(p))[name]).label.rstrip(":")
            return f"{label} {rel}: file not found (paths are relative to {project.resolve()})"
    if not p.output_dir.strip():
        return "no output job folder (I/O tab)"
    from .lock import holder

    busy = holder(project / p.output_dir)
    if busy:
        return f"{p.output_dir}: another job ({busy}) is writing into this folder"
    if cmd.queue:
        if not (project / p.qsubscript).is_file():
            return f"Standard submission script {p.qsubscript}: file not found"
        if not p.qsub.strip():
            return "no queue submit command (Running tab)"
    elif cmd.nr_mpi > 1:
        return _mpi_problem(cmd, env)
    return None


def _mpi_problem(cmd: JobCommand, env: Mapping[str, str]) -> str | None:
    try:
        limit = int(env.get("RELION_ERROR_LOCAL_MPI", "32") or 32)
    except ValueError:
        limit = 32
    if cmd.nr_mpi > limit:
        return (
            f"a local job with {cmd.nr_mpi} MPI processes is more than "
            f"RELION_ERROR_LOCAL_MPI ({limit}) allows"
        )
    launcher = shlex.split(cmd.mpirun)[0] if cmd.mpirun.strip() else "mpirun"
    if shutil.which(launcher) is None:
        return f"Number of MPI procs {cmd.nr_mpi}: '{launcher}' is not on the PATH"
    import importlib.util

    if importlib.util.find_spec("mpi4py") is None:
        return (
            f"Number of MPI procs {cmd.nr_mpi}: mpi4py is not installed "
            "(pip install 'napari-subtomo-recon[mpi]')"
        )
    return None


# --------------------------------------------------------------------------------------
# Job folders: numbering, note.txt, exit status, Continue!


def next_job_dir(project_dir: str | os.PathLike[str], dirname: str = JOB_DIRNAME) -> str:
    """``Reconstruct/jobNNN/`` with RELION's next job number for this project.

    RELION numbers jobs across all job types: the counter of default_pipeline.star, or
    one more than the highest ``<Type>/jobNNN`` folder present, whichever is larger.
    """
    project = Path(project_dir)
    n = 1
    pipe = project / "default_pipeline.star"
    if pipe.is_file():
        m = re.search(r"_rlnPipeLineJobCounter\s+(\d+)", pipe.read_text(errors="replace"))
        if m:
            n = max(n, int(m.group(1)))
    try:
        for d in project.glob("*/job*"):
            m = re.fullmatch(r"job(\d+)", d.name)
            if m and d.is_dir():
                n = max(n, int(m.group(1)) + 1)
    except OSError:
        pass
    return f"{dirname}/job{n:03d}/"


def note_text(commands: list[str], when: float | None = None) -> str:
    """What RELION's pipeliner appends to ``note.txt`` for each run."""
    stamp = time.ctime(time.time() if when is None else when)
    return (
        f"\n ++++ Executing new job on {stamp}\n ++++ with the following command(s): \n"
        + "".join(c + "\n" for c in commands)
        + " ++++ \n"
    )


def program_note_text(command: str) -> str:
    """What RELION's programs write to ``note.txt`` when no pipeliner runs them."""
    return (
        f"++++ Executing new job on {time.strftime('%a %b %d %H:%M:%S %Y')}\n"
        f"++++ with the following command(s):\n{command}\n++++\n"
    )


def append_note(job_dir: str | os.PathLike[str], commands: list[str]) -> Path:
    p = Path(job_dir) / "note.txt"
    p.parent.mkdir(parents=True, exist_ok=True)
    with open(p, "a") as fh:
        fh.write(note_text(commands))
    return p


def clear_status(job_dir: str | os.PathLike[str]) -> None:
    """Remove the exit-status files of an earlier run, as RELION's pipeliner does."""
    for name in (*STATUS_FILES, "RELION_JOB_ABORT_NOW"):
        (Path(job_dir) / name).unlink(missing_ok=True)


def mark_status(job_dir: str | os.PathLike[str], status: str) -> None:
    """``status``: success, failure or aborted (the file RELION's pipeliner looks for)."""
    try:
        Path(job_dir).mkdir(parents=True, exist_ok=True)
        (Path(job_dir) / _STATUS[status]).touch()
    except OSError:
        pass


def status_of(job_dir: str | os.PathLike[str]) -> str | None:
    """success, failure, aborted, or None (running, or never run)."""
    for status, name in _STATUS.items():
        if (Path(job_dir) / name).exists():
            return status
    return None


def start(
    job_dir: str | os.PathLike[str], p: ReconstructParams, is_continue: bool, commands: list[str]
) -> None:
    """What RELION's GUI does before running a job: job.star, no old status, note.txt."""
    job_dir = Path(job_dir)
    try:
        job_dir.mkdir(parents=True, exist_ok=True)
        write_job(job_dir, p, is_continue)
        clear_status(job_dir)
        append_note(job_dir, commands)
    except OSError as e:  # a full disk or a missing permission: the machine's, in one line
        raise fault(e.filename or job_dir, e) from None


def can_continue(job_dir: str | os.PathLike[str]) -> bool:
    """Continue! is possible: the job folder exists and has checkpoints or no final maps."""
    job_dir = Path(job_dir)
    return job_dir.is_dir() and (has_checkpoints(job_dir) or not (job_dir / "merged.mrc").exists())


def was_interrupted(job_dir: str | os.PathLike[str]) -> bool:
    """A job that ran (note.txt, a status file or checkpoints) and did not finish."""
    job_dir = Path(job_dir)
    if not can_continue(job_dir) or status_of(job_dir) == "success":
        return False
    ran = ("note.txt", _STATUS["failure"], _STATUS["aborted"])
    return has_checkpoints(job_dir) or any((job_dir / f).exists() for f in ran)


# --------------------------------------------------------------------------------------
# Queue submission


def submission_script(
    template: str, commands: list[str], p: ReconstructParams, output_dir: str
) -> str:
    """Fill a RELION queue template (``XXXcommandXXX`` and friends), as RELION does."""
    nmpi, nthr = max(1, p.nr_mpi), max(1, p.threads)
    dedicated = max(1, p.min_dedicated)
    cores = nmpi * nthr
    out = with_slash(output_dir)
    subs = {
        "XXXmpinodesXXX": str(nmpi),
        "XXXthreadsXXX": str(nthr),
        "XXXcoresXXX": str(cores),
        "XXXdedicatedXXX": str(dedicated),
        "XXXnodesXXX": str(math.ceil(cores / dedicated)),
        "XXXnameXXX": out,
        "XXXerrfileXXX": out + "run.err",
        "XXXoutfileXXX": out + "run.out",
        "XXXqueueXXX": p.queuename,
    }
    for k, v in p.qsub_extras.items():
        m = re.fullmatch(r"qsub_extra(\d+)", k)
        if m:
            subs[f"XXXextra{m.group(1)}XXX"] = str(v)
    lines = []
    for line in template.splitlines():
        for a, b in subs.items():
            line = line.replace(a, b)
        if "XXXcommandXXX" in line:
            lines += [line.replace("XXXcommandXXX", c, 1) for c in commands]
        else:
            lines.append(line)
    return "\n".join(lines) + "\n\n"


def write_submission_script(p: ReconstructParams, cmd: JobCommand) -> tuple[Path, list[str]]:
    """``<job>/run_submit.script`` from the template; returns it and the submit command."""
    project = Path(p.project_dir or ".")
    template = (project / p.qsubscript).read_text()
    script_rel = with_slash(p.output_dir) + "run_submit.script"
    script = project / script_rel
    write_text_atomic(script, submission_script(template, [str(cmd)], p, p.output_dir))
    try:
        script.chmod(0o755)
    except OSError as e:
        raise fault(script, e, "cannot make the script executable") from None
    return script, [*shlex.split(p.qsub), script_rel]
