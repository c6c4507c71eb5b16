"""STAR file access with one-line errors that name the file, block, row and label.

A thin layer over :mod:`starfile`: every table comes back as a
:class:`pandas.DataFrame` (list-style blocks become one row), and the
labels that hold names are always read as strings (a tomogram called ``01``
stays ``01``).
"""

from __future__ import annotations

import linecache
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import starfile

from ..errors import InputError
from ._typing import FloatArray, IntArray, StrPath

# Labels whose values are names or paths: never let pandas turn them into numbers.
STRING_LABELS = [
    "rlnTomoName",
    "rlnTomoParticleName",
    "rlnMicrographName",
    "rlnTomoTiltSeriesStarFile",
    "rlnTomoTiltSeriesName",
    "rlnOpticsGroupName",
    "rlnTomoParticlesFile",
    "rlnTomoTomogramsFile",
    "rlnTomoTrajectoriesFile",
    "rlnTomoManifoldsFile",
    "rlnTomoReferenceMap1File",
    "rlnTomoReferenceMap2File",
    "rlnTomoReferenceMaskFile",
    "rlnTomoReferenceFscFile",
    "rlnImageName",
    "rlnCtfImage",
    "rlnTomoDeformationType",
    "rlnTomoProjX",
    "rlnTomoProjY",
    "rlnTomoProjZ",
    "rlnTomoProjW",
    "rlnEvenZernike",
    "rlnOddZernike",
    "rlnTomoDeformationCoefficients",
    "rlnTomoVisibleFrames",
]


def at(root: StrPath | None, path: StrPath) -> str:
    """``path`` as RELION resolves it: relative paths are relative to the project folder
    ``root`` (the working directory when ``root`` is None)."""
    path = str(path)
    if not root or not path or os.path.isabs(path):
        return path
    return os.path.join(str(root), path)


def read_star(path: StrPath, what: str = "STAR file") -> dict[str, pd.DataFrame]:
    """Read every block of a STAR file; ``what`` names the file's role in errors.

    Every block comes back as a DataFrame of (rows, labels); a list-style block is one row.
    """
    blocks = _parse_blocks(_readable_file(path, what), path, what)
    return {
        str(name): _checked_block(block, path, what, str(name)) for name, block in blocks.items()
    }


def _readable_file(path: StrPath, what: str) -> Path:
    """``path`` as a Path, or a one-line error if it is missing, not a file or unreadable."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"{path}: {what} not found")
    if not p.is_file():
        raise InputError(f"{path}: {what} is not a file")
    if not os.access(p, os.R_OK):
        raise InputError(f"{path}: {what} is not readable")
    return p


def _parse_blocks(p: Path, path: StrPath, what: str) -> dict[Any, Any]:
    """starfile's blocks (DataFrames or dicts), or a one-line error naming ``path``."""
    # starfile reads lines through linecache and clears it only after a successful parse:
    # after a parse error the next read of the same path would see the stale lines.
    linecache.clearcache()
    try:
        blocks = starfile.read(p, always_dict=True, parse_as_string=STRING_LABELS)
    except InputError:
        raise
    except Exception as exc:  # starfile/pandas raise many kinds; the user needs one line
        msg = str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__
        raise InputError(f"{path}: cannot parse {what} ({msg})") from None
    if not isinstance(blocks, dict) or not blocks:
        raise InputError(f"{path}: {what} contains no data blocks")
    return blocks


def _checked_block(block: Any, path: StrPath, what: str, name: str) -> pd.DataFrame:
    """One block as a DataFrame (a list-style block becomes one row), checked for duplicate
    labels and for values that span several lines."""
    if isinstance(block, dict):
        block = pd.DataFrame({k: [v] for k, v in block.items()})
    if not isinstance(block, pd.DataFrame):
        raise InputError(f"{path}: cannot parse {what} (block data_{name})")
    dup = block.columns[block.columns.duplicated()]
    if len(dup):
        raise InputError(f"{path}: data_{name} has the label {dup[0]} more than once")
    _reject_multiline_values(block, path, name)
    return block


def _reject_multiline_values(block: pd.DataFrame, path: StrPath, name: str) -> None:
    """An unbalanced quote makes pandas swallow the following lines into one value."""
    for k, label in enumerate(block.columns):
        col = block.iloc[:, k]
        if pd.api.types.is_numeric_dtype(col):
            continue
        bad = col.astype(str).str.contains("[\r\n]", regex=True).to_numpy(dtype=bool)
        if bad.any():
            r = int(np.flatnonzero(bad)[0])
            raise InputError(
                f"{path}: data_{name} row {r + 1} {label}: a value spans several lines "
                "(unbalanced quote?)"
            )


def require_block(
    blocks: dict[str, pd.DataFrame], name: str, path: StrPath, what: str
) -> pd.DataFrame:
    if name not in blocks:
        raise InputError(f"{path}: {what} has no data_{name} block")
    return blocks[name]


class Table:
    """A STAR table with typed, error-reporting column access.

    ``df`` holds the block's rows (re-indexed 0..n-1); ``path`` and ``block`` name the file
    and the ``data_`` block in error messages.
    """

    def __init__(self, df: pd.DataFrame, path: StrPath, block: str):
        self.df: pd.DataFrame = df.reset_index(drop=True)
        self.path: str = str(path)
        self.block: str = block

    def __len__(self) -> int:
        return len(self.df)

    def __contains__(self, label: str) -> bool:
        return label in self.df.columns

    def has_all(self, *labels: str) -> bool:
        return all(label in self.df.columns for label in labels)

    def where(self, label: str | None = None, row: int | None = None) -> str:
        s = f"{self.path}: data_{self.block}"
        if row is not None:
            s += f" row {row + 1}"
        if label is not None:
            s += f" {label}"
        return s

    def missing(self, label: str) -> InputError:
        return InputError(f"{self.path}: data_{self.block} has no {label} column")

    def floats(self, label: str, default: float | None = None) -> FloatArray:
        """A numeric column as float64, shape (rows,); ``default`` fills a missing column."""
        if label not in self.df.columns:
            if default is None:
                raise self.missing(label)
            return np.full(len(self.df), float(default))
        col = self.df[label]
        values: FloatArray = pd.to_numeric(col, errors="coerce").to_numpy(dtype=np.float64)
        bad = np.flatnonzero(~np.isfinite(values))
        if bad.size:
            r = int(bad[0])
            raise InputError(f"{self.where(label, r)}: '{col.iloc[r]}' is not a finite number")
        return values

    def ints(self, label: str, default: int | None = None) -> IntArray:
        """A column of whole numbers as int64, shape (rows,) (``default`` as in ``floats``)."""
        values = self.floats(label, None if default is None else float(default))
        bad = np.flatnonzero(values != np.round(values))
        if bad.size:
            r = int(bad[0])
            raise InputError(
                f"{self.where(label, r)}: '{self.df[label].iloc[r]}' is not an integer"
            )
        return values.astype(np.int64)

    def strings(self, label: str, default: str | None = None) -> list[str]:
        if label not in self.df.columns:
            if default is None:
                raise self.missing(label)
            return [default] * len(self.df)
        return [str(v) for v in self.df[label].tolist()]

    def float_at(self, label: str, row: int, default: float | None = None) -> float:
        if label not in self.df.columns:
            if default is None:
                raise self.missing(label)
            return float(default)
        v = self.df[label].iloc[row]
        try:
            f = float(v)
        except (TypeError, ValueError):
            raise InputError(f"{self.where(label, row)}: '{v}' is not a number") from None
        if not np.isfinite(f):
            raise InputError(f"{self.where(label, row)}: '{v}' is not a finite number")
        return f

    def string_at(self, label: str, row: int, default: str | None = None) -> str:
        if label not in self.df.columns:
            if default is None:
                raise self.missing(label)
            return default
        return str(self.df[label].iloc[row])

    def vectors(self, label: str, length: int | None = None) -> list[FloatArray]:
        """A column of RELION vectors written as ``[a,b,c]``: one (length,) array per row."""
        out = []
        for r, v in enumerate(self.strings(label)):
            out.append(parse_vector(v, self.where(label, r), length))
        return out


def parse_vector(text: str, where: str, length: int | None = None) -> FloatArray:
    """``[a,b,c]`` (or ``a b c``) as a float64 array; ``where`` starts the error message."""
    t = str(text).strip()
    if t.startswith("[") and t.endswith("]"):
        t = t[1:-1]
    try:
        vals = np.array([float(x) for x in t.replace(",", " ").split()], dtype=np.float64)
    except ValueError:
        raise InputError(f"{where}: '{text}' is not a vector of numbers") from None
    if length is not None and vals.size != length:
        raise InputError(f"{where}: expected {length} numbers, found {vals.size}")
    if not np.all(np.isfinite(vals)):
        raise InputError(f"{where}: '{text}' contains non-finite numbers")
    return vals


def format_vector(v: Iterable[float]) -> str:
    """``[a,b,c]`` with every number written in full (``repr``)."""
    return "[" + ",".join(repr(float(x)) for x in v) + "]"


def write_star(blocks: Mapping[str, pd.DataFrame | Mapping[str, Any]], path: StrPath) -> None:
    """Write blocks in the given order (dicts become list-style blocks), atomically."""
    from .atomic import atomic_path

    with atomic_path(path) as tmp:
        starfile.write(blocks, tmp, float_format="%.6f")
