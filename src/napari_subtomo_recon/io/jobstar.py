"""RELION's ``job.star`` file: a list block ``data_job`` and a loop ``data_joboptions_values``.

Only the file format: option names and values are strings here.  What the options mean
(and how they map to the job's parameters) is :mod:`napari_subtomo_recon.job.relion`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InputError

JOB_TYPE_LABEL = "relion.reconstructparticletomo"


@dataclass
class JobStar:
    type_label: str = JOB_TYPE_LABEL
    is_continue: bool = False
    is_tomo: bool = True
    options: dict[str, str] = field(default_factory=dict)  # RELION's strings


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


def write_job_star(path: str | os.PathLike[str], job: JobStar) -> Path:
    """Write ``job.star`` (``path`` may be the job folder)."""
    from .atomic import write_text_atomic

    p = Path(path)
    if p.is_dir() or not p.name.endswith(".star"):
        p = p / "job.star"
    p.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(p, format_job_star(job))
    return p


def read_job_star(path: str | os.PathLike[str]) -> JobStar:
    """Read a RELION job.star (``path`` may be the job folder), with the STAR grammar of
    :mod:`.star`."""
    from .star import RawBlock, read_raw

    p = Path(path)
    if p.is_dir():
        p = p / "job.star"
    if not p.is_file():
        raise InputError(f"{p}: job.star not found")
    blocks: dict[str, RawBlock] = read_raw(p, p, "job.star")
    if "job" not in blocks:
        raise InputError(f"{p}: not a RELION job.star (no data_job block)")
    job = blocks["job"]
    head = dict(zip(job.labels, job.rows[0] if job.rows else [], strict=False))
    label = head.get("rlnJobTypeLabel", "")
    if label != JOB_TYPE_LABEL:
        raise InputError(
            f"{p}: a '{label or 'unknown'}' job, not Reconstruct particle ({JOB_TYPE_LABEL})"
        )
    if "joboptions_values" not in blocks:
        raise InputError(f"{p}: not a RELION job.star (no data_joboptions_values block)")
    values = blocks["joboptions_values"]
    try:
        kv = values.labels.index("rlnJobOptionVariable"), values.labels.index("rlnJobOptionValue")
    except ValueError:
        raise InputError(f"{p}: data_joboptions_values lacks rlnJobOptionVariable/Value") from None
    options = {row[kv[0]]: row[kv[1]] for row in values.rows}

    def flag(name: str) -> bool:
        return head.get(name, "0").strip() in ("1", "true", "Yes")

    return JobStar(label, flag("rlnJobIsContinue"), flag("rlnJobIsTomo"), options)
