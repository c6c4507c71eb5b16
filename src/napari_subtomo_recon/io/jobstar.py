"""RELION's "Reconstruct particle" GUI job without a GUI: options, job.star, command line.

RELION 5 describes a job by its *job options* (``in_optimisation``, ``box_size``,
``nr_mpi``, ...): string values stored in ``<job>/job.star`` and turned into one command
line by the GUI.  This module holds that description for
``relion.reconstructparticletomo`` (labels, defaults, slider ranges and help, the
environment variables RELION reads for the Running tab), reads and writes ``job.star``
in RELION's layout, builds the same flags as RELION's GUI (with our program name),
fills RELION-style queue submission templates and writes ``note.txt``.

It imports no Qt: the napari widget (``_qt``) is a view on it, and tests use it directly.
"""

from __future__ import annotations

import math
import os
import re
import shlex
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InputError

JOB_TYPE_LABEL = "relion.reconstructparticletomo"
JOB_DIRNAME = "Reconstruct"
PROGRAM = "subtomo-recon"
STATUS_FILES = ("RELION_JOB_EXIT_SUCCESS", "RELION_JOB_EXIT_FAILURE", "RELION_JOB_EXIT_ABORTED")


@dataclass(frozen=True)
class JobOption:
    """One field of the job: RELION's variable name, label, default and slider range."""

    name: str
    label: str
    kind: str  # "file", "dir", "bool", "int", "float", "text"
    default: object
    tab: str
    help: str
    min: float | None = None
    max: float | None = None
    step: float | None = None
    pattern: str = ""  # file-dialog filter
    relion: bool = True  # False: ours only, never written to job.star as such


TABS = ("I/O", "Average", "Helix", "Running")

_QSUB_HELP = (
    "Template of the script sent to the queue. These words are replaced in it: "
    "XXXcommandXXX (the command), XXXqueueXXX (queue name), XXXmpinodesXXX (MPI procs), "
    "XXXthreadsXXX (threads), XXXcoresXXX (procs x threads), XXXdedicatedXXX (minimum "
    "dedicated cores per node), XXXnodesXXX (nodes = ceil(cores / dedicated)), "
    "XXXnameXXX (job folder), XXXoutfileXXX / XXXerrfileXXX (run.out / run.err) and "
    "XXXextra1XXX, XXXextra2XXX, ... (the extra queue options). Default: "
    "$RELION_QSUB_TEMPLATE."
)


def _env_int(env: Mapping[str, str], name: str, default: int) -> int:
    try:
        return int(env[name])
    except (KeyError, ValueError):
        return default


def _env_bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    v = env.get(name)
    if v is None:
        return default
    return v.strip().lower() in ("1", "true", "yes", "y", "on")


def job_options(env: Mapping[str, str] | None = None) -> dict[str, JobOption]:
    """Every field in tab order; the Running tab reads RELION's environment variables."""
    env = os.environ if env is None else env
    mpi_max = _env_int(env, "RELION_MPI_MAX", 64)
    thread_max = _env_int(env, "RELION_THREAD_MAX", 16)
    # fmt: off
    opts = [
        # ---- I/O
        JobOption(
            "project_dir", "Project directory:", "dir", "", "I/O",
            "The RELION project folder. Every path below, and every path inside the STAR "
            "files, is relative to it (RELION runs jobs from the project folder).",
            relion=False,
        ),
        JobOption(
            "in_optimisation", "Input optimisation set:", "file", "", "I/O",
            "Optimisation set, passed as --i. Entries given below override its components.",
            pattern="Optimisation set STAR file (*optimisation_set.star)",
        ),
        JobOption(
            "use_direct_entries", "OR: use direct entries?", "bool", False, "I/O",
            "If Yes, the optimisation set is not used (leave it empty) and the particle, "
            "tomogram and trajectory sets below are given directly.",
        ),
        JobOption(
            "in_particles", "Input particle set:", "file", "", "I/O",
            "Particle set STAR file (--p).", pattern="Particle STAR file (*.star)",
        ),
        JobOption(
            "in_tomograms", "Input tomogram set:", "file", "", "I/O",
            "Tomogram set STAR file (--t), written by tomogram reconstruction and updated by "
            "frame alignment or CTF refinement.",
            pattern="Tomogram set STAR file (*.star)",
        ),
        JobOption(
            "in_trajectories", "Input trajectory set:", "file", "", "I/O",
            "Trajectory set (--mot). Leave empty if no particle motion has been estimated.",
            pattern="Trajectory set STAR file (*.star)",
        ),
        JobOption(
            "output_dir", "Output job folder:", "text", "", "I/O",
            "Job folder for the maps, job.star and note.txt (--o), relative to the project "
            "folder. Default: Reconstruct/jobNNN/ with the next free job number.",
            relion=False,
        ),
        # ---- Average
        JobOption(
            "binning", "Binning factor:", "float", 1.0, "Average",
            "The tilt images are binned by this (real-valued) factor and reconstructed in the "
            "box below: larger factors reconstruct a larger region.",
            1, 16, 1,
        ),
        JobOption(
            "box_size", "Box size (binned pix):", "int", 128, "Average",
            "Box of the reconstruction, independent of the refinement box. A larger box "
            "shows more of the surroundings and keeps more CTF-delocalised high-resolution "
            "signal.",
            32, 512, 16,
        ),
        JobOption(
            "crop_size", "Cropped box size (binned pix):", "int", -1, "Average",
            "If positive, the maps are also written cropped to this size (--crop), for a map "
            "smaller than the box needed to catch the CTF-delocalised signal.",
            -1, 512, 16,
        ),
        JobOption(
            "snr", "Wiener SNR constant:", "float", 0.0, "Average",
            "If positive, a Wiener filter with this signal-to-noise ratio (--SNR); otherwise "
            "a heuristic avoids dividing by very small weights. A low SNR can wash out high "
            "frequencies and make the map less suited for refinement.",
            0, 0.0001, 0.00001,
        ),
        JobOption(
            "sym_name", "Symmetry:", "text", "C1", "Average",
            "Point group (--sym); C1 for an asymmetric particle. Icosahedral settings: I1 "
            "(no-Crowther 222), I2 (Crowther 222), I3 (52-setting), I4 (another 52 "
            "setting). 'relion_refine --sym D2 --print_symmetry_ops' lists the operators.",
        ),
        # ---- Helix
        JobOption(
            "do_helix", "Apply helical symmetry?", "bool", False, "Helix",
            "If Yes, impose helical symmetry in Fourier space.",
        ),
        JobOption(
            "helical_nr_asu", "Number of unique asymmetrical units:", "int", 1, "Helix",
            "Unique helical asymmetric units per box (at least 1), e.g. inter-box distance "
            "100 A / rise 20 A = 5.",
            1, 100, 1,
        ),
        JobOption(
            "helical_twist", "Helical twist (deg):", "float", -1.0, "Helix",
            "Twist in degrees; positive for a right-handed helix.",
            -50, 50, 1,
        ),
        JobOption(
            "helical_rise", "Helical rise (A):", "float", 4.75, "Helix",
            "Rise in Angstrom (always positive).",
            0, 50, 0.5,
        ),
        JobOption(
            "helical_tube_outer_diameter", "Outer helical diameter (A):", "float", 200.0,
            "Helix",
            "Outer diameter of the helix, for RELION's real-space symmetrisation "
            "(relion_helix_toolbox); kept in job.star, not used by subtomo-recon.",
            50, 300, 10,
        ),
        JobOption(
            "helical_z_percentage", "Central Z length (%):", "float", 20.0, "Helix",
            "Central part of the box used by RELION's real-space symmetrisation "
            "(relion_helix_toolbox); kept in job.star, not used by subtomo-recon.",
            5, 80, 1,
        ),
        # ---- Running
        JobOption(
            "nr_mpi", "Number of MPI procs:", "int", _env_int(env, "RELION_QSUB_NRMPI", 1),
            "Running",
            "MPI processes (mpirun -n N); 1 runs inside napari without MPI. The maximum is "
            "$RELION_MPI_MAX.",
            1, mpi_max, 1,
        ),
        JobOption(
            "nr_threads", "Number of threads:", "int",
            _env_int(env, "RELION_QSUB_NRTHREADS", 1), "Running",
            "Threads per process (--j and --j_out). The maximum is $RELION_THREAD_MAX.",
            1, thread_max, 1,
        ),
        JobOption(
            "mem", "Memory limit (GB):", "float", -1.0, "Running",
            "Memory for the accumulators per process (--mem); fewer per-thread copies are "
            "kept to fit. -1: no limit. Stored in job.star as part of the additional "
            "arguments, so RELION runs the same command.",
            -1, 1024, 1, relion=False,
        ),
        JobOption(
            "do_queue", "Submit to queue?", "bool", _env_bool(env, "RELION_QUEUE_USE", False),
            "Running",
            "If Yes, write run_submit.script from the template below and submit it with the "
            "queue command instead of running here. Default: $RELION_QUEUE_USE.",
        ),
        JobOption(
            "queuename", "Queue name:", "text", env.get("RELION_QUEUE_NAME", "openmpi"),
            "Running", "Queue to submit to (XXXqueueXXX). Default: $RELION_QUEUE_NAME.",
        ),
        JobOption(
            "qsub", "Queue submit command:", "text", env.get("RELION_QSUB_COMMAND", "sbatch"),
            "Running",
            "Command that submits the script, e.g. sbatch, qsub or bsub. Default: "
            "$RELION_QSUB_COMMAND.",
        ),
    ]
    # fmt: on
    for i in range(1, _env_int(env, "RELION_QSUB_EXTRA_COUNT", 2) + 1):
        label = env.get(f"RELION_QSUB_EXTRA{i}")
        if label is not None:
            opts.append(
                JobOption(
                    f"qsub_extra{i}",
                    label,
                    "text",
                    env.get(f"RELION_QSUB_EXTRA{i}_DEFAULT", ""),
                    "Running",
                    env.get(
                        f"RELION_QSUB_EXTRA{i}_HELP",
                        f"Extra queue option: replaces XXXextra{i}XXX in the template.",
                    ),
                )
            )
    # fmt: off
    opts += [
        JobOption(
            "qsubscript", "Standard submission script:", "file",
            env.get("RELION_QSUB_TEMPLATE", "/public/EM/RELION/relion/bin/relion_qsub.csh"),
            "Running", _QSUB_HELP, pattern="Script Files (*.csh *.sh *.bash *.script)",
        ),
        JobOption(
            "min_dedicated", "Minimum dedicated cores per node:", "int",
            _env_int(env, "RELION_MINIMUM_DEDICATED", 1), "Running",
            "Cores to request per node (XXXdedicatedXXX), to make the queue fill whole nodes. "
            "Default: $RELION_MINIMUM_DEDICATED.",
            1, 64, 1,
        ),
        JobOption(
            "other_args", "Additional arguments:", "text", "", "Running",
            "Further subtomo-recon / relion_tomo_reconstruct_particle flags, e.g. --whiten "
            "or --taper 4 (see subtomo-recon --help).",
        ),
    ]
    # fmt: on
    return {o.name: o for o in opts}


def default_values(env: Mapping[str, str] | None = None) -> dict[str, object]:
    return {name: o.default for name, o in job_options(env).items()}


# --------------------------------------------------------------------------------------
# Values: Python values in the widget, strings in job.star


def format_number(v: float) -> str:
    """Numbers as a user would type them: 6 not 6.0, 5e-05 kept short."""
    v = float(v)
    if v == int(v) and abs(v) < 1e15:
        return str(int(v))
    return format(v, ".10g")


def format_value(opt: JobOption, v: object) -> str:
    if opt.kind == "bool":
        return "Yes" if v else "No"
    if opt.kind in ("int", "float"):
        return format_number(v)  # type: ignore[arg-type]
    return "" if v is None else str(v)


def parse_value(opt: JobOption, text: str, where: str = "job.star") -> object:
    text = text.strip()
    if opt.kind == "bool":
        return text == "Yes"  # RELION: anything but "Yes" is No
    if opt.kind in ("int", "float"):
        try:
            x = float(text)
        except ValueError:
            raise InputError(f"{where}: {opt.name} '{text}' is not a number") from None
        if opt.kind == "int":
            if x != int(x):
                raise InputError(f"{where}: {opt.name} '{text}' is not an integer")
            return int(x)
        return x
    return text


def _with_slash(d: str) -> str:
    d = d.strip()
    return d if not d or d.endswith("/") else d + "/"


# --------------------------------------------------------------------------------------
# Command line (RELION's getCommandsTomoReconPartJob + prepareFinalCommand)


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


def build_command(
    values: Mapping[str, object], is_continue: bool = False, env: Mapping[str, str] | None = None
) -> JobCommand:
    """The flags RELION's GUI writes for this job, in its order.

    Raises InputError with RELION's message when the I/O entries are inconsistent and
    when the additional arguments cannot be split.
    """
    env = os.environ if env is None else env
    v = dict(default_values(env))
    v.update(values)
    out = _with_slash(str(v["output_dir"]))
    args: list[str] = []
    if not v["use_direct_entries"]:
        if not v["in_optimisation"]:
            raise InputError(
                "no optimisation set is given, and direct entries are not used (I/O tab)"
            )
        args += ["--i", str(v["in_optimisation"])]
    else:
        if v["in_optimisation"]:
            raise InputError(
                "direct entries are used, but the optimisation set entry is not empty (I/O tab)"
            )
        if not v["in_tomograms"]:
            raise InputError("no tomogram set is given (I/O tab)")
        if not v["in_particles"]:
            raise InputError("no particle set is given (I/O tab)")
        args += ["--p", str(v["in_particles"]), "--t", str(v["in_tomograms"])]
        if v["in_trajectories"]:
            args += ["--mot", str(v["in_trajectories"])]
    args += ["--theme", "classic", "--o", out, "--b", format_number(v["box_size"])]
    if int(v["crop_size"]) > 0:
        args += ["--crop", format_number(v["crop_size"])]
    args += ["--bin", format_number(v["binning"])]
    if float(v["snr"]) > 0:
        args += ["--SNR", format_number(v["snr"])]
    if v["do_helix"]:
        args += ["--nr_helical_asu", format_number(v["helical_nr_asu"])]
        args += ["--helical_twist", format_number(v["helical_twist"])]
        args += ["--helical_rise", format_number(v["helical_rise"])]
    threads = format_number(v["nr_threads"])
    args += ["--j", threads, "--j_out", threads, "--j_in", "1"]
    if is_continue:
        args.append("--only_do_unfinished")
    args += ["--sym", str(v["sym_name"]).strip()]
    args += _split(other_args_with_mem(v), "Additional arguments")
    args += ["--pipeline_control", out]
    return JobCommand(
        args=args,
        nr_mpi=int(v["nr_mpi"]),
        queue=bool(v["do_queue"]),
        mpirun=env.get("RELION_MPIRUN", "mpirun"),
    )


def _split(text: str, what: str) -> list[str]:
    try:
        return shlex.split(text)
    except ValueError as e:
        raise InputError(f"{what}: {e}") from None


def other_args_with_mem(values: Mapping[str, object]) -> str:
    """The memory field travels in the additional arguments (RELION has no such option)."""
    other = str(values.get("other_args", "") or "").strip()
    mem = float(values.get("mem", -1) or -1)
    if mem > 0:
        other = f"--mem {format_number(mem)}" + (f" {other}" if other else "")
    return other


def lift_mem(other_args: str) -> tuple[float, str]:
    """Split ``--mem X`` off the additional arguments (inverse of other_args_with_mem)."""
    try:
        toks = shlex.split(other_args)
    except ValueError:
        return -1.0, other_args
    if "--mem" in toks:
        k = toks.index("--mem")
        if k + 1 < len(toks):
            try:
                mem = float(toks[k + 1])
            except ValueError:
                return -1.0, other_args
            return mem, shlex.join(toks[:k] + toks[k + 2 :])
    return -1.0, other_args


def params_from_values(values: Mapping[str, object], is_continue: bool = False):
    """ReconstructParams exactly as the command line would parse the generated flags."""
    from ..cli import parse_args

    cmd = build_command(values, is_continue)
    params, extra = parse_args(cmd.args)
    if extra.get("help") or extra.get("version"):
        raise InputError("Additional arguments: --help / --version cannot be run from here")
    return params, cmd


def check_values(
    values: Mapping[str, object],
    project_dir: str | os.PathLike | None = None,
    is_continue: bool = False,
) -> str | None:
    """None if the job can run; else the first problem, as one line."""
    try:
        params, cmd = params_from_values(values, is_continue)
        params.validate()
    except InputError as e:
        return str(e)
    project = Path(project_dir or ".")
    if project_dir is not None and not project.is_dir():
        return f"Project directory {project}: no such folder"
    opts = job_options()
    names = ["in_optimisation"]
    if values.get("use_direct_entries"):
        names = ["in_particles", "in_tomograms", "in_trajectories"]
    for name in names:
        rel = str(values.get(name) or "")
        if rel and not (project / rel).is_file():
            label = opts[name].label.rstrip(":")
            return f"{label} {rel}: file not found (paths are relative to {project.resolve()})"
    if not str(values.get("output_dir") or "").strip():
        return "no output job folder (I/O tab)"
    if cmd.queue:
        script = str(values.get("qsubscript") or "")
        if not (project / script).is_file():
            return f"Standard submission script {script}: file not found"
        if not str(values.get("qsub") or "").strip():
            return "no queue submit command (Running tab)"
    elif cmd.nr_mpi > 1:
        limit = int(os.environ.get("RELION_ERROR_LOCAL_MPI", "32") or 32)
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
# job.star


@dataclass
class JobStar:
    type_label: str = JOB_TYPE_LABEL
    is_continue: bool = False
    is_tomo: bool = True
    options: dict[str, str] = field(default_factory=dict)  # RELION's strings


def job_star_values(values: Mapping[str, object], env=None) -> dict[str, str]:
    """The RELION job options as job.star strings (ours folded in, as RELION would see them)."""
    opts = job_options(env)
    out = {}
    for name, opt in opts.items():
        if not opt.relion:
            continue
        v = values.get(name, opt.default)
        out[name] = format_value(opt, v)
    out["other_args"] = other_args_with_mem(values)
    return dict(sorted(out.items()))  # RELION writes its std::map: alphabetical


def values_from_job_star(job: JobStar, env=None) -> tuple[dict[str, object], list[str]]:
    """Widget values from job.star strings, and warnings for options this job lacks."""
    opts = job_options(env)
    values: dict[str, object] = {}
    notes: list[str] = []
    for name, text in job.options.items():
        opt = opts.get(name)
        if opt is None or not opt.relion:
            notes.append(f"job.star: ignoring unknown job option '{name}'")
            continue
        values[name] = parse_value(opt, text)
    if "other_args" in values:
        mem, rest = lift_mem(str(values["other_args"]))
        values["other_args"] = rest
        values["mem"] = mem
    return values, notes


def _star_escape(s: str) -> str:
    if s == "":
        return '""'
    if s[0] in "\"'" or any(c in s for c in " \t"):
        return '"' + s + '"'
    return s


def format_job_star(job: JobStar) -> str:
    """RELION 5's layout: a list block ``data_job`` and a loop ``data_joboptions_values``."""
    head = {
        "rlnJobTypeLabel": job.type_label,
        "rlnJobIsContinue": str(int(job.is_continue)),
        "rlnJobIsTomo": str(int(job.is_tomo)),
    }
    width = max(10, *(len(k) for k in head))
    lines = ["", "# version 50001", "", "data_job", ""]
    lines += [f"_{k}{' ' * (12 + width - len(k))}{v}" for k, v in head.items()]
    lines += [" ", "", "# version 50001", "", "data_joboptions_values", "", "loop_ "]
    lines += ["_rlnJobOptionVariable #1 ", "_rlnJobOptionValue #2 "]
    for k, v in job.options.items():
        lines.append(f"{_star_escape(k):>10} {_star_escape(v):>10} ")
    lines.append(" ")
    return "\n".join(lines) + "\n"


def write_job_star(path: str | os.PathLike, job: JobStar) -> Path:
    """Write ``job.star`` (``path`` may be the job folder)."""
    from .atomic import write_text_atomic

    p = Path(path)
    if p.is_dir() or not p.name.endswith(".star"):
        p = p / "job.star"
    p.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(p, format_job_star(job))
    return p


_TOKEN = re.compile(r'"((?:[^"]|"(?!\s|$))*)"(?=\s|$)|(\S+)')


def _tokens(line: str) -> list[str]:
    return [q if u is None or u == "" else u for q, u in _TOKEN.findall(line)]


def read_job_star(path: str | os.PathLike) -> JobStar:
    """Read a RELION job.star (``path`` may be the job folder)."""
    p = Path(path)
    if p.is_dir():
        p = p / "job.star"
    if not p.is_file():
        raise InputError(f"{p}: job.star not found")
    try:
        text = p.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"{p}: cannot read job.star ({e})") from None
    blocks: dict[str, list[list[str]]] = {}
    block = None
    for raw in text.splitlines():
        line = raw.split("#", 1)[0] if raw.lstrip().startswith("#") else raw
        line = line.strip()
        if not line:
            continue
        if line.startswith("data_"):
            block = line[5:]
            blocks[block] = []
        elif block is not None:
            blocks[block].append(_tokens(line.replace("\a", "")))
    if "job" not in blocks:
        raise InputError(f"{p}: not a RELION job.star (no data_job block)")
    head = {t[0].lstrip("_"): (t[1] if len(t) > 1 else "") for t in blocks["job"] if t}
    label = head.get("rlnJobTypeLabel", "")
    if label != JOB_TYPE_LABEL:
        raise InputError(
            f"{p}: a '{label or 'unknown'}' job, not Reconstruct particle ({JOB_TYPE_LABEL})"
        )
    if "joboptions_values" not in blocks:
        raise InputError(f"{p}: not a RELION job.star (no data_joboptions_values block)")
    rows = blocks["joboptions_values"]
    labels = [t[0].lstrip("_") for t in rows if t and t[0].startswith("_")]
    try:
        kv = labels.index("rlnJobOptionVariable"), labels.index("rlnJobOptionValue")
    except ValueError:
        raise InputError(f"{p}: data_joboptions_values lacks rlnJobOptionVariable/Value") from None
    options: dict[str, str] = {}
    for t in rows:
        if not t or t[0].startswith("_") or t[0] == "loop_":
            continue
        if len(t) < len(labels):
            raise InputError(f"{p}: short row in data_joboptions_values: {' '.join(t)}")
        options[t[kv[0]]] = t[kv[1]]

    def flag(name):
        return head.get(name, "0").strip() in ("1", "true", "Yes")

    return JobStar(label, flag("rlnJobIsContinue"), flag("rlnJobIsTomo"), options)


# --------------------------------------------------------------------------------------
# Job folders, notes, queue scripts


def next_job_dir(project_dir: str | os.PathLike, dirname: str = JOB_DIRNAME) -> str:
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


def append_note(job_dir: str | os.PathLike, commands: list[str]) -> Path:
    p = Path(job_dir) / "note.txt"
    p.parent.mkdir(parents=True, exist_ok=True)
    with open(p, "a") as fh:
        fh.write(note_text(commands))
    return p


def clear_status(job_dir: str | os.PathLike) -> None:
    """Remove the exit-status files of an earlier run, as RELION's pipeliner does."""
    for name in (*STATUS_FILES, "RELION_JOB_ABORT_NOW"):
        (Path(job_dir) / name).unlink(missing_ok=True)


def mark_status(job_dir: str | os.PathLike, status: str) -> None:
    """``status``: success, failure or aborted (the file RELION's pipeliner looks for)."""
    name = {"success": STATUS_FILES[0], "failure": STATUS_FILES[1], "aborted": STATUS_FILES[2]}
    try:
        Path(job_dir).mkdir(parents=True, exist_ok=True)
        (Path(job_dir) / name[status]).touch()
    except OSError:
        pass


def submission_script(
    template: str,
    commands: list[str],
    values: Mapping[str, object],
    output_dir: str,
) -> str:
    """Fill a RELION queue template (``XXXcommandXXX`` and friends), as RELION does."""
    nmpi = int(values.get("nr_mpi", 1) or 1)
    nthr = int(values.get("nr_threads", 1) or 1)
    dedicated = max(1, int(values.get("min_dedicated", 1) or 1))
    cores = nmpi * nthr
    out = _with_slash(output_dir)
    subs = {
        "XXXmpinodesXXX": str(nmpi),
        "XXXthreadsXXX": str(nthr),
        "XXXcoresXXX": str(cores),
        "XXXdedicatedXXX": str(dedicated),
        "XXXnodesXXX": str(math.ceil(cores / dedicated)),
        "XXXnameXXX": out,
        "XXXerrfileXXX": out + "run.err",
        "XXXoutfileXXX": out + "run.out",
        "XXXqueueXXX": str(values.get("queuename", "")),
    }
    for k, v in values.items():
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
