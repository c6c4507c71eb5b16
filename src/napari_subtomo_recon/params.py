"""Every option of the Reconstruct particle job, defined once.

:class:`ReconstructParams` is a dataclass with readable field names; each field's
metadata (:class:`Spec`) says where the option appears and what values it accepts:

- ``flag``: the command-line flag (``--b``), RELION's where RELION has one;
- ``job_option``: the variable in RELION's ``job.star`` (``box_size``);
- ``label``, ``tab``, ``help``: the GUI field, with RELION's label and help text;
- ``domain``: the values it accepts, checked wherever a value comes in (flag, job.star,
  GUI) with one message format;
- ``checkpoint``: the option changes the accumulated Fourier volumes, so a resumed
  run must have the same value (the checkpoint fingerprint).

Everything else is derived from these fields by generic code: the command-line parser
and its usage text (:mod:`.cli`), job.star reading and writing and the command RELION's
GUI would build (:mod:`.job.relion`), the napari form (:mod:`._qt.form`), the numerics'
:class:`~.core.backprojection.Settings` and the checkpoint fingerprint.  Adding an option
is adding a field here.

Fields without a flag are RELION GUI settings that are not passed to the program
(``use_direct_entries``, ``do_helix``, the queue); they live in job.star and in the form.

This module imports neither NumPy kernels nor Qt: the napari widget imports it at once.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from .domain import Domain
from .errors import InputError

TABS = ("I/O", "Average", "Helix", "Running")

# each helical unit is one more pass of the symmetrisation over the volumes: beyond this
# a job would spend hours there (point groups are at most D99: the names allow 2 digits)
MAX_HELICAL_UNITS = 1000

T = TypeVar("T")


# --------------------------------------------------------------------------------------
# Domains: the values an option accepts


def _symmetry_problem(name: object) -> str | None:
    # a light module (no Numba): the form checks the name while the user types
    from .core.symmetry import validate_symmetry

    return validate_symmetry(str(name))


def _mem_problem(v: float) -> str | None:
    return None if v == -1 or v > 0 else "must be positive, or -1 for no limit"


# --------------------------------------------------------------------------------------
# Field metadata


@dataclass(frozen=True)
class Spec:
    """Where an option appears and what it accepts (the metadata of one field)."""

    label: str  # GUI label, RELION's where RELION has the field
    help: str  # RELION's help text (tooltip, usage)
    flag: str | None = None  # command-line flag; None: a GUI / job.star setting only
    job_option: str | None = None  # RELION job.star variable; None: not a RELION job option
    tab: str | None = None  # GUI tab; None: not in the form
    kind: str = ""  # "file", "dir", "text", "choice"; empty: from the field's type
    domain: Domain = Domain()
    checkpoint: bool = False  # changes the accumulated volumes (resume fingerprint)
    relion: bool = True  # the flag is relion_tomo_reconstruct_particle's (False: ours)
    gui_default: Any = None  # RELION GUI's default where it differs (None: the same)
    env_default: Callable[[Mapping[str, str]], Any] | None = None  # GUI default from env
    slider: tuple[float, float, float] | None = None  # RELION's slider (min, max, step)
    pattern: str = ""  # file dialog filter
    advanced: bool = False  # in the form's "More options" (not in RELION's GUI)
    metavar: str = ""  # usage: the value's name


def option(default: T, spec: Spec) -> T:
    """A dataclass field with its :class:`Spec`."""
    return field(default=default, metadata={"spec": spec})


def spec_of(f: dataclasses.Field[Any]) -> Spec:
    return f.metadata["spec"]  # type: ignore[no-any-return]


def _env_int(name: str, default: int) -> Callable[[Mapping[str, str]], int]:
    def get(env: Mapping[str, str]) -> int:
        try:
            return int(env[name])
        except (KeyError, ValueError):
            return default

    return get


def _env_str(name: str, default: str) -> Callable[[Mapping[str, str]], str]:
    return lambda env: env.get(name, default)


def _env_bool(name: str, default: bool) -> Callable[[Mapping[str, str]], bool]:
    def get(env: Mapping[str, str]) -> bool:
        v = env.get(name)
        return default if v is None else v.strip().lower() in ("1", "true", "yes", "y", "on")

    return get


_SYM_HELP = (
    "If the molecule is asymmetric, set Symmetry group to C1. Note their are multiple "
    "possibilities for icosahedral symmetry:\n"
    "* I1: No-Crowther 222 (standard in Heymann, Chagoyen & Belnap, JSB, 151 (2005) "
    "196–207)\n* I2: Crowther 222\n* I3: 52-setting (as used in SPIDER?)\n"
    "* I4: A different 52 setting\n"
    "The command 'relion_refine --sym D2 --print_symmetry_ops' prints a list of all "
    "symmetry operators for symmetry group D2. RELION uses XMIPP's libraries for symmetry "
    "operations. Therefore, look at the XMIPP Wiki for more details: "
    "http://xmipp.cnb.csic.es/twiki/bin/view/Xmipp/WebHome?topic=Symmetry"
)

_QSUBSCRIPT_HELP = (
    "The template for your standard queue job submission script. Its default location "
    "may be changed by setting the environment variable RELION_QSUB_TEMPLATE. In the "
    "template script a number of variables will be replaced:\n"
    "XXXcommandXXX = relion command + arguments;\nXXXqueueXXX = The queue name;\n"
    "XXXmpinodesXXX = The number of MPI nodes;\nXXXthreadsXXX = The number of threads;\n"
    "XXXcoresXXX = XXXmpinodesXXX * XXXthreadsXXX;\n"
    "XXXdedicatedXXX = The minimum number of dedicated cores on each node;\n"
    "XXXnodesXXX = The number of requested nodes = CEIL(XXXcoresXXX / XXXdedicatedXXX);\n"
    "If these options are not enough for your standard jobs, you may define a "
    "user-specified number of extra variables: XXXextra1XXX, XXXextra2XXX, etc. The number "
    "of extra variables is controlled through the environment variable "
    "RELION_QSUB_EXTRA_COUNT. Their help text is set by the environment variables "
    "RELION_QSUB_EXTRA1, RELION_QSUB_EXTRA2, etc For example, setenv "
    'RELION_QSUB_EXTRA_COUNT 1, together with setenv RELION_QSUB_EXTRA1 "Max number of '
    'hours in queue" will result in an additional (text) ein the GUI Any variables '
    "XXXextra1XXX in the template script will be replaced by the corresponding value."
    "Likewise, default values for the extra entries can be set through environment "
    "variables RELION_QSUB_EXTRA1_DEFAULT, RELION_QSUB_EXTRA2_DEFAULT, etc. But note that "
    "(unlike all other entries in the GUI) the extra values are not remembered from one "
    "run to the other."
)

_HELPERS_HELP = (
    "Helical symmetry in real space is applied by RELION's relion_helix_toolbox, which "
    "subtomo-recon does not run; the value is kept in job.star."
)


# --------------------------------------------------------------------------------------
# The parameters


@dataclass
class ReconstructParams:
    """Every option of the job, in RELION's GUI order (see the module docstring)."""

    # ---- I/O
    project_dir: str = option("", Spec(
        "Project directory:",
        "The RELION project folder. Every path below, and every path inside the STAR files, "
        "is relative to it (RELION runs its programs from the project folder). Not a RELION "
        "option: set it by opening a job folder, a job.star or an optimisation set.",
        tab="I/O", kind="dir", relion=False,
    ))  # fmt: skip
    optimisation_set: str = option("", Spec(
        "Input optimisation set:",
        "Input optimisation set. This will be passed with a --i argument to the executable. "
        "If any inidividual components of the optimisation set are specified below, then "
        "they will override the components in this optimisation set.",
        flag="--i", job_option="in_optimisation", tab="I/O", kind="file", metavar="FILE",
        pattern="Optimisation set STAR file (*optimisation_set.star)",
    ))  # fmt: skip
    use_direct_entries: bool = option(False, Spec(
        "OR: use direct entries?",
        "If set to to true, the optimisation set will be ignored and the direct entries "
        "below will be used instead.",
        job_option="use_direct_entries", tab="I/O",
    ))  # fmt: skip
    particles: str = option("", Spec(
        "Input particle set:", "Input particle set.",
        flag="--p", job_option="in_particles", tab="I/O", kind="file", metavar="FILE",
        pattern="Particle STAR file (*.star)",
    ))  # fmt: skip
    tomograms: str = option("", Spec(
        "Input tomogram set:",
        "Input tomogram set STAR file. This file gets generated during Tomogram "
        "Reconstruction, and updated during Tomogram Frame Alignment or Tomogram CTF "
        "Refinement.",
        flag="--t", job_option="in_tomograms", tab="I/O", kind="file", metavar="FILE",
        pattern="Tomogram set STAR file (*.star)",
    ))  # fmt: skip
    trajectories: str = option("", Spec(
        "Input trajectory set:",
        "Input trajectory set. Leave empty if no particle motion tracks have been "
        "estimated during tomogram frame alignment.",
        flag="--mot", job_option="in_trajectories", tab="I/O", kind="file", metavar="FILE",
        pattern="Trajectory set STAR file (*.star)",
    ))  # fmt: skip
    output_dir: str = option("", Spec(
        "Output job folder:",
        "The job folder for the maps, job.star and note.txt (--o), relative to the project "
        "folder. By default Reconstruct/jobNNN/ with the project's next job number, as "
        "RELION numbers jobs.",
        flag="--o", tab="I/O", kind="text", metavar="DIR",
    ))  # fmt: skip

    # ---- Average
    binning: float = option(1.0, Spec(
        "Binning factor:",
        "The tilt series images will be binned by this (real-valued) factor and then "
        "reconstructed in the specified box size above. Note that thereby the reconstructed "
        "region becomes larger when specifying binning factors larger than one.",
        flag="--bin", job_option="binning", tab="Average", checkpoint=True,
        domain=Domain(min=1.0), slider=(1, 16, 1), metavar="X",
    ))  # fmt: skip
    box_size: int = option(0, Spec(
        "Box size (binned pix):",
        "Box size of the reconstruction. Note that this is independent of the box size that "
        "has been used to refine the particle. This allows the user to construct a 3D map of "
        "arbitrary size to gain an overview of the structure surrounding the particle. A "
        "sufficiently large box size also allows more of the high-frequency signal to be "
        "captured that has been delocalised by the CTF.",
        flag="--b", job_option="box_size", tab="Average", checkpoint=True, gui_default=128,
        domain=Domain(min=4, even=True, why="RELION's Fourier code needs an even box"),
        slider=(32, 512, 16), metavar="N",
    ))  # fmt: skip
    crop_size: int = option(-1, Spec(
        "Cropped box size (binned pix):",
        "If set to a positive value, the program will output an additional set of maps that "
        "have been cropped to this size. This is useful if a map is desired that is smaller "
        "than the box size required to retrieve the CTF-delocalised signal.",
        flag="--crop", job_option="crop_size", tab="Average",
        domain=Domain(min=-1), slider=(-1, 512, 16), metavar="N",
    ))  # fmt: skip
    snr: float = option(-1.0, Spec(
        "Wiener SNR constant:",
        "If set to a positive value, apply a Wiener filter with this signal-to-noise ratio. "
        "If omitted, the reconstruction will use a heuristic to prevent divisions by "
        "excessively small numbers. Please note that using a low (even though realistic) SNR "
        "might wash out the higher frequencies, which could make the map unsuitable to be "
        "used for further refinement.",
        flag="--SNR", job_option="snr", tab="Average", gui_default=0.0,
        domain=Domain(min=-1e6, max=1e6, why="beyond it the Wiener division overflows"),
        slider=(0, 0.0001, 0.00001), metavar="X",
    ))  # fmt: skip
    symmetry: str = option("C1", Spec(
        "Symmetry:", _SYM_HELP,
        flag="--sym", job_option="sym_name", tab="Average", kind="text",
        domain=Domain(check=_symmetry_problem), metavar="GROUP",
    ))  # fmt: skip

    # ---- not in RELION's GUI (written to job.star's "Additional arguments")
    whiten: bool = option(False, Spec(
        "Whiten the noise?", "Whiten the noise by flattening the power spectrum (--whiten).",
        flag="--whiten", tab="Average", advanced=True, checkpoint=True,
    ))  # fmt: skip
    no_ctf: bool = option(False, Spec(
        "Skip the CTFs?", "Do not apply CTFs (--no_ctf).",
        flag="--no_ctf", tab="Average", advanced=True, checkpoint=True,
    ))  # fmt: skip
    no_circle_crop: bool = option(False, Spec(
        "Skip the circular crop?",
        "Do not crop 2D images to a circle prior to insertion (--no_circle_crop).",
        flag="--no_circle_crop", tab="Average", advanced=True, checkpoint=True,
    ))  # fmt: skip
    taper: float = option(10.0, Spec(
        "Taper (pix):",
        "Taper against the sphere by this number of pixels (only if cropping) (--taper).",
        flag="--taper", tab="Average", advanced=True, domain=Domain(min=0.0),
        metavar="X",
    ))  # fmt: skip
    cutoff_fraction: float = option(0.01, Spec(
        "Dose-weight cut-off:",
        "Ignore shells for which the dose weight falls below this value (--cutoff_fract).",
        flag="--cutoff_fract", tab="Average", advanced=True, checkpoint=True,
        domain=Domain(min=0.0, max=1.0, max_open=True), metavar="X",
    ))  # fmt: skip
    exact: bool = option(False, Spec(
        "RELION's exact extraction?",
        "Cut a binning·box window out of the tilt image for every particle and tilt, as "
        "RELION does: the maps equal RELION's to rounding, and it is slower. By default each "
        "tilt is binned once and the windows are cut from it (agreement with RELION: FSC "
        "≥ 0.995 at every shell) (--exact).",
        flag="--exact", tab="Average", advanced=True, checkpoint=True, relion=False,
    ))  # fmt: skip
    prebin: str = option("auto", Spec(
        "Bin whole tilts first:",
        "Fast path: bin each tilt image once before cutting the windows: auto (when it pays "
        "off), always or never. Never done without the circle crop, whose soft edge is what "
        "lets binned windows agree with RELION's (--prebin).",
        flag="--prebin", tab="Average", advanced=True, checkpoint=True, relion=False,
        kind="choice", domain=Domain(choices=("auto", "always", "never")), metavar="MODE",
    ))  # fmt: skip
    use_visible_frames: bool = option(False, Spec(
        "Use rlnTomoVisibleFrames?",
        "Leave out the tilts that Extract excluded for a particle (rlnTomoVisibleFrames, "
        "written by --max_dose or --min_frames). RELION 5.0.1 ignores them and reconstructs "
        "from every tilt in which the particle lies inside the image (3dem/relion PR "
        "#1344); the default keeps RELION's maps (--use_visible_frames).",
        flag="--use_visible_frames", tab="Average", advanced=True, checkpoint=True,
        relion=False,
    ))  # fmt: skip
    unbinned_visibility: bool = option(False, Spec(
        "Visibility from the whole window?",
        "Use a tilt only if the whole binning·box window cut from it lies inside the "
        "image. RELION 5.0.1 tests only the binned half box, so at binning > 1 it also uses "
        "tilts whose window sticks out of the image, filled with repeated edge pixels "
        "(3dem/relion PR #1305); the default keeps RELION's maps (--unbinned_visibility).",
        flag="--unbinned_visibility", tab="Average", advanced=True, checkpoint=True,
        relion=False,
    ))  # fmt: skip
    fix_symmetry_wrap: bool = option(False, Spec(
        "Fix the symmetry wrap-around?",
        "RELION's Fourier-space symmetrisation reads the far edge of the volume where an "
        "operator maps a frequency a rounding error below zero; for Oh the symmetrised "
        "volume is then wrong at a few hundred frequencies and its kx = 0 plane is not "
        "Hermitian. This reads such frequencies at zero; the default "
        "keeps RELION's maps (--fix_symmetry_wrap).",
        flag="--fix_symmetry_wrap", tab="Average", advanced=True, checkpoint=True,
        relion=False,
    ))  # fmt: skip
    ignore_unknown_tomograms: bool = option(False, Spec(
        "Ignore particles of unknown tomograms?",
        "Drop particles whose rlnTomoName is not in the tomogram set (with a warning), as "
        "RELION does; by default such a particle set is refused (--ignore_unknown_tomograms).",
        flag="--ignore_unknown_tomograms", tab="Average", advanced=True, relion=False,
    ))  # fmt: skip

    # ---- Helix
    do_helix: bool = option(False, Spec(
        "Apply helical symmetry?",
        "If set to Yes, then apply helical symmetry in Fourier space. Note that you may also "
        "want to apply helical symmetry in real-space, but that needs to be done from the "
        "command line, using the relion_helix_toolbox...",
        job_option="do_helix", tab="Helix",
    ))  # fmt: skip
    helical_units: int = option(1, Spec(
        "Number of unique asymmetrical units:",
        "Number of unique helical asymmetrical units in each segment box. If the inter-box "
        "distance (set in segment picking step) is 100 Angstroms and the estimated helical "
        "rise is ~20 Angstroms, then set this value to 100 / 20 = 5 (nearest integer). This "
        "integer should not be less than 1. The correct value is essential in measuring the "
        "signal to noise ratio in helical reconstruction.",
        flag="--nr_helical_asu", job_option="helical_nr_asu", tab="Helix",
        domain=Domain(min=1, max=MAX_HELICAL_UNITS, why="each unit is one more pass of the "
                      "symmetrisation over the volumes"),
        slider=(1, 100, 1), metavar="N",
    ))  # fmt: skip
    helical_twist: float = option(0.0, Spec(
        "Helical twist (deg):",
        "Set helical twist (in degrees) to positive value if it is a right-handed helix. "
        "Helical rise is a positive value in Angstroms.",
        flag="--helical_twist", job_option="helical_twist", tab="Helix", gui_default=-1.0,
        domain=Domain(), slider=(-50, 50, 1), metavar="DEG",
    ))  # fmt: skip
    helical_rise: float = option(0.0, Spec(
        "Helical rise (A):",
        "Set helical rise (in Amgstroms). This value is always positive",
        flag="--helical_rise", job_option="helical_rise", tab="Helix", gui_default=4.75,
        domain=Domain(min=0.0), slider=(0, 50, 0.5), metavar="A",
    ))  # fmt: skip
    helical_tube_outer_diameter: float = option(200.0, Spec(
        "Outer helical diameter (A):",
        "Outer diameter (in Angstroms) of the reconstructed helix. Real-space averaging will "
        "be performed within this diameter. " + _HELPERS_HELP,
        job_option="helical_tube_outer_diameter", tab="Helix", domain=Domain(min=0.0),
        slider=(50, 300, 10),
    ))  # fmt: skip
    helical_z_percentage: float = option(20.0, Spec(
        "Central Z length (%):",
        "Reconstructed helix suffers from inaccuracies of orientation searches. The central "
        "part of the box contains more reliable information compared to the top and bottom "
        "parts along Z axis, where Fourier artefacts are also present if the number of "
        "helical asymmetrical units is larger than 1. Therefore, information from the central "
        "part of the box is used for searching and imposing helical symmetry in real space. "
        "Set this value (%) to the central part length along Z axis divided by the box size. "
        "Values around 30% are commonly used. " + _HELPERS_HELP,
        job_option="helical_z_percentage", tab="Helix", domain=Domain(min=0.0, max=100.0),
        slider=(5, 80, 1),
    ))  # fmt: skip

    # ---- Running
    nr_mpi: int = option(1, Spec(
        "Number of MPI procs:",
        "Number of MPI nodes to use in parallel. When set to 1, MPI will not be used. The "
        "maximum can be set through the environment variable RELION_MPI_MAX.",
        job_option="nr_mpi", tab="Running", env_default=_env_int("RELION_QSUB_NRMPI", 1),
        domain=Domain(min=1), slider=(1, 64, 1),
    ))  # fmt: skip
    threads: int = option(6, Spec(
        "Number of threads:",
        "Number of shared-memory (POSIX) threads to use in parallel. When set to 1, no "
        "multi-threading will be used. The maximum can be set through the environment "
        "variable RELION_THREAD_MAX.",
        flag="--j", job_option="nr_threads", tab="Running",
        env_default=_env_int("RELION_QSUB_NRTHREADS", 1),
        domain=Domain(min=1), slider=(1, 16, 1), metavar="N",
    ))  # fmt: skip
    threads_in: int = option(3, Spec(
        "Inner threads:", "Number of inner threads (slower, needs less memory); --j sets "
        "the threads of subtomo-recon, this is accepted for compatibility.",
        flag="--j_in", domain=Domain(min=1), metavar="N",
    ))  # fmt: skip
    threads_out: int = option(2, Spec(
        "Outer threads:", "Number of outer threads (faster, needs more memory); --j sets "
        "the threads of subtomo-recon, this is accepted for compatibility.",
        flag="--j_out", domain=Domain(min=1), metavar="N",
    ))  # fmt: skip
    memory_gb: float = option(-1.0, Spec(
        "Memory limit (GB):",
        "Max. amount of memory (in GB) to use (--mem); subtomo-recon uses smaller batches "
        "to fit. -1: no limit. RELION's GUI has no such field: it is kept in job.star's "
        "additional arguments, so RELION runs the same command.",
        flag="--mem", tab="Running", domain=Domain(check=_mem_problem), metavar="GB",
    ))  # fmt: skip
    do_queue: bool = option(False, Spec(
        "Submit to queue?",
        "If set to Yes, the job will be submit to a queue, otherwise the job will be "
        "executed locally. Note that only MPI jobs may be sent to a queue. The default can be "
        "set through the environment variable RELION_QUEUE_USE.",
        job_option="do_queue", tab="Running", env_default=_env_bool("RELION_QUEUE_USE", False),
    ))  # fmt: skip
    queuename: str = option("openmpi", Spec(
        "Queue name:",
        "Name of the queue to which to submit the job. The default name can be set through "
        "the environment variable RELION_QUEUE_NAME.",
        job_option="queuename", tab="Running", kind="text",
        env_default=_env_str("RELION_QUEUE_NAME", "openmpi"),
    ))  # fmt: skip
    qsub: str = option("sbatch", Spec(
        "Queue submit command:",
        "Name of the command used to submit scripts to the queue, e.g. qsub or bsub.\n\n"
        "Note that the person who installed RELION should have made a custom script for your "
        "cluster/queue setup. Check this is the case (or create your own script following the "
        "RELION Wiki) if you have trouble submitting jobs. The default command can be set "
        "through the environment variable RELION_QSUB_COMMAND.",
        job_option="qsub", tab="Running", kind="text",
        env_default=_env_str("RELION_QSUB_COMMAND", "sbatch"),
    ))  # fmt: skip
    qsub_extras: dict[str, str] = field(default_factory=dict, metadata={"spec": Spec(
        "Extra queue options:",
        "RELION_QSUB_EXTRA1, RELION_QSUB_EXTRA2, ...: one field each (XXXextra1XXX, ...).",
        tab="Running", kind="extras",
    )})  # fmt: skip
    qsubscript: str = option("/public/EM/RELION/relion/bin/relion_qsub.csh", Spec(
        "Standard submission script:", _QSUBSCRIPT_HELP,
        job_option="qsubscript", tab="Running", kind="file",
        env_default=_env_str(
            "RELION_QSUB_TEMPLATE", "/public/EM/RELION/relion/bin/relion_qsub.csh"
        ),
        pattern="Script Files (*.csh *.sh *.bash *.script)",
    ))  # fmt: skip
    min_dedicated: int = option(1, Spec(
        "Minimum dedicated cores per node:",
        "Minimum number of dedicated cores that need to be requested on each node. This is "
        "useful to force the queue to fill up entire nodes of a given size. The default can "
        "be set through the environment variable RELION_MINIMUM_DEDICATED.",
        job_option="min_dedicated", tab="Running",
        env_default=_env_int("RELION_MINIMUM_DEDICATED", 1),
        domain=Domain(min=1), slider=(1, 64, 1),
    ))  # fmt: skip
    other_args: str = option("", Spec(
        "Additional arguments:",
        "In this box command-line arguments may be provided that are not generated by the "
        "GUI. This may be useful for testing developmental options and/or expert use of the "
        "program. To print a list of possible options, run the corresponding program from "
        "the command line without any arguments.",
        job_option="other_args", tab="Running", kind="text",
    ))  # fmt: skip

    # ---- command line only
    only_do_unfinished: bool = option(False, Spec(
        "Only do unfinished?",
        "Only process undone subtomograms: resume from the per-tomogram checkpoints in "
        "OUTDIR/temp (Continue! in the GUI).",
        flag="--only_do_unfinished",
    ))  # fmt: skip
    no_backup: bool = option(False, Spec(
        "No checkpoints?",
        "Do not make backups (makes it impossible to use --only_do_unfinished).",
        flag="--no_backup", tab="Running", advanced=True,
    ))  # fmt: skip
    no_recon: bool = option(False, Spec(
        "Backproject only?",
        "Do not reconstruct the volume, only backproject (for benchmarking purposes).",
        flag="--no_recon",
    ))  # fmt: skip
    pipeline_control: str = option("", Spec(
        "Pipeline control:",
        "RELION's pipeliner folder for the exit-status files (RELION_JOB_EXIT_*) and "
        "RELION_JOB_ABORT_NOW; the GUI passes the job folder.",
        flag="--pipeline_control", kind="text", metavar="DIR",
    ))  # fmt: skip
    theme: str = option("", Spec(
        "Theme:", "RELION's GUI theme of the program's own windows: accepted and ignored.",
        flag="--theme", kind="text", metavar="NAME",
    ))  # fmt: skip

    # ---------------------------------------------------------------------- derived views
    @classmethod
    def for_gui(cls, env: Mapping[str, str] | None = None) -> ReconstructParams:
        """RELION GUI's defaults (box 128, SNR 0, twist -1, threads from $RELION_QSUB_...)."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            s = spec_of(f)
            if s.env_default is not None:
                values[f.name] = s.env_default(env)
            elif s.gui_default is not None:
                values[f.name] = s.gui_default
        values["qsub_extras"] = {k: e.default for k, e in queue_extras(env).items()}
        return cls(**values)

    def replace(self, **changes: Any) -> ReconstructParams:
        return dataclasses.replace(self, **changes)

    def check(self) -> None:
        """Every field in its domain, and the fields consistent with each other.

        Raises InputError with one line naming the flag (or the GUI label).
        """
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            msg = spec_of(f).domain.problem(value)
            if msg:
                raise InputError(f"{where(f.name, type(self))} {format_value(value)}: {msg}")
        if 0 < self.crop_size and self.crop_size > self.box_size > 0:
            raise InputError(
                f"--crop {self.crop_size}: the cropped box must not exceed the box "
                f"(--b {self.box_size})"
            )

    def check_runnable(self) -> None:
        """:meth:`check`, and what a run needs: an output folder, a box, inputs."""
        if not self.output_dir:
            raise InputError("--o: an output directory is required")
        if self.box_size <= 0:
            raise InputError(
                f"--b {self.box_size}: the box size must be a positive number of binned pixels"
            )
        self.check()
        if not (self.optimisation_set or self.particles):
            raise InputError(
                "no particle set: give --p particles.star or --i optimisation_set.star"
            )
        if not (self.optimisation_set or self.tomograms):
            raise InputError(
                "no tomogram set: give --t tomograms.star or --i optimisation_set.star"
            )

    @property
    def crops(self) -> bool:
        return 0 < self.crop_size < self.box_size

    def fingerprint(self) -> dict[str, Any]:
        """The options a checkpoint must agree with to be resumed."""
        return {
            f.name: getattr(self, f.name) for f in dataclasses.fields(self) if spec_of(f).checkpoint
        }


def field_map(cls: type[Any] = ReconstructParams) -> dict[str, dataclasses.Field[Any]]:
    """The fields of a parameters class by name (a subclass may add options)."""
    return {f.name: f for f in dataclasses.fields(cls)}


def where(name: str, cls: type[Any] = ReconstructParams) -> str:
    """How a message names an option: its flag, or its GUI label."""
    s = spec_of(field_map(cls)[name])
    return s.flag or s.label.rstrip(":?")


def format_value(v: object) -> str:
    """A value as a user types it: 6 not 6.0, 5e-05 kept short, Yes/No."""
    if isinstance(v, bool):
        return "Yes" if v else "No"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isfinite(v) and v == int(v) and abs(v) < 1e15:
            return str(int(v))
        return format(v, ".10g")
    return str(v)


FIELDS = field_map(ReconstructParams)


def kind_of(f: dataclasses.Field[Any]) -> str:
    """ "bool", "int", "float", "text", "file", "dir", "choice" or "extras"."""
    s = spec_of(f)
    if s.kind:
        return s.kind
    default = f.default
    if isinstance(default, bool):
        return "bool"
    if isinstance(default, int):
        return "int"
    if isinstance(default, float):
        return "float"
    return "text"


def parse_text(f: dataclasses.Field[Any], text: str) -> Any:
    """A value from its text (flag, job.star or form); ValueError says what was expected.

    Integers may be written as any integral number ("1e3" is 1000); "1.5" is refused.
    Booleans are RELION's: "Yes" is true, anything else false.
    """
    kind = kind_of(f)
    text = text.strip()
    if kind == "bool":
        return text == "Yes"
    if kind in ("int", "float"):
        try:
            x = float(text)
        except ValueError:
            raise ValueError("an integer" if kind == "int" else "a number") from None
        if kind == "int":
            if not math.isfinite(x) or x != int(x):
                raise ValueError("an integer")
            return int(x)
        return x
    return text


def check_value(
    name: str, value: Any, text: str | None = None, cls: type[Any] = ReconstructParams
) -> None:
    """Raise InputError (flag or label, the value as written, what is wrong)."""
    msg = spec_of(field_map(cls)[name]).domain.problem(value)
    if msg:
        shown = text if text is not None else format_value(value)
        raise InputError(f"{where(name, cls)} {shown}: {msg}")


def iter_specs(cls: type[Any] = ReconstructParams) -> Iterator[tuple[str, Spec, str]]:
    """(name, spec, kind) of every field, in declaration order."""
    for f in dataclasses.fields(cls):
        yield f.name, spec_of(f), kind_of(f)


# --------------------------------------------------------------------------------------
# RELION's extra queue options (RELION_QSUB_EXTRA1..N): defined by the environment


@dataclass(frozen=True)
class QueueExtra:
    key: str  # job.star variable: qsub_extra1, ...
    label: str
    default: str
    help: str


def queue_extras(env: Mapping[str, str] | None = None) -> dict[str, QueueExtra]:
    """The extra queue fields RELION's GUI shows for this environment."""
    env = os.environ if env is None else env
    try:
        count = int(env.get("RELION_QSUB_EXTRA_COUNT", "2"))
    except ValueError:
        count = 2
    out = {}
    for i in range(1, count + 1):
        label = env.get(f"RELION_QSUB_EXTRA{i}")
        if label is None:
            continue
        help_ = env.get(
            f"RELION_QSUB_EXTRA{i}_HELP",
            f"Extra option to pass to the qsub template script. Any occurrences of "
            f"XXXextra{i}XXX will be changed by this value.",
        )
        key = f"qsub_extra{i}"
        out[key] = QueueExtra(key, label, env.get(f"RELION_QSUB_EXTRA{i}_DEFAULT", ""), help_)
    return out


def to_argv(params: ReconstructParams) -> list[str]:
    """The flags that reproduce ``params`` on the command line (defaults left out, but
    --o and --b always)."""
    out: list[str] = []
    for f in dataclasses.fields(params):
        s = spec_of(f)
        v = getattr(params, f.name)
        if not s.flag or (v == f.default and f.name not in ("output_dir", "box_size")):
            continue
        if isinstance(v, bool):
            out += [s.flag] if v else []
        else:
            out += [s.flag, format_value(v)]
    return out
