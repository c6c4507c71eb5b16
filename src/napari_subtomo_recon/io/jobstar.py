"""RELION's ``job.star`` file: a list block ``data_job`` and a loop ``data_joboptions_values``.

Only the file format: option names and values are strings here.  What the options mean
(and how they map to the job's parameters) is :mod:`napari_subtomo_recon.job.relion`.
"""

from __future__ import annotations

import os
import re
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


_TOKEN = re.compile(r'"((?:[^"]|"(?!\s|$))*)"(?=\s|$)|(\S+)')


def _tokens(line: str) -> list[str]:
    return [q if u is None or u == "" else u for q, u in _TOKEN.findall(line)]


def read_job_star(path: str | os.PathLike[str]) -> JobStar:
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

    def flag(name: str) -> bool:
        return head.get(name, "0").strip() in ("1", "true", "Yes")

    return JobStar(label, flag("rlnJobIsContinue"), flag("rlnJobIsTomo"), options)
