"""STAR file access with one-line errors that name the file, block, row and label.

A thin layer over :mod:`starfile`: every table comes back as a
:class:`pandas.DataFrame` (list-style blocks become one row), and the
labels that hold names are always read as strings (a tomogram called ``01``
stays ``01``).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
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
    The index holds each row's line number in the file (named ``line``), so that errors can
    name the line even after rows were selected.  A column becomes numeric when every value
    in it is a finite number; otherwise (``nan``, ``inf``, words) it keeps the text as
    written, which :class:`Table` quotes in its messages.
    """
    p = _readable_file(path, what)
    return {b.name: _frame(b) for b in read_raw(p, path, what).values()}


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


# --- the grammar, as RELION's MetaDataTable::readStar reads it (src/metadata_table.cpp) ------
#
# ``data_<name>`` opens a block; ``loop_`` then a table: label lines (``_rlnX`` or
# ``_rlnX #1``) and then rows, one per line, until a blank line or the next block.  Without
# ``loop_``, a list: one ``_rlnX value`` per line.  Lines starting with ``#`` or ``;`` are
# comments anywhere (RELION skips them between labels; between rows it would take one for a
# row with no values, which it refuses).  A value is a word, or a quoted string that ends at
# a quote followed by a blank.  Differences, each a refusal where RELION would read
# something else silently: a blank line followed by more rows in the same loop (RELION
# stops at the blank line and drops the rest), and a row with a different number of values
# than labels.  Accepted where RELION refuses: CR LF line ends.  Bytes that are not UTF-8
# (a Latin-1 comment) are kept as they are (``surrogateescape``), as file names are.


@dataclass
class RawBlock:
    """One ``data_`` block as written: labels, rows of value texts and their line numbers."""

    name: str
    labels: list[str] = field(default_factory=list)
    label_lines: list[int] = field(default_factory=list)
    rows: list[list[str]] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)  # 1-based line number of each row
    is_list: bool = True


def read_raw(p: Path, path: StrPath, what: str) -> dict[str, RawBlock]:
    """Every block of the file (the first of two with one name, as RELION reads it)."""
    try:
        data = p.read_bytes()
    except OSError as e:
        raise InputError(f"{path}: cannot read the {what} ({e.strerror or e})") from None
    blocks: dict[str, RawBlock] = {}
    parser = _Parser(path, what)
    for n, raw in enumerate(data.split(b"\n"), start=1):
        try:
            text = raw.decode("utf-8")
            parser.dirty = False
        except UnicodeDecodeError:  # fine in a comment; refused in a label or value
            text = raw.decode("utf-8", "surrogateescape")
            parser.dirty = True
        block = parser.feed(text.rstrip("\r"), n)
        if block is not None and block.name not in blocks:
            blocks[block.name] = block
    if not blocks:
        raise InputError(f"{path}: {what} contains no data blocks")
    for b in blocks.values():
        _check_labels(b, path)
    return blocks


class _Parser:
    """A line-by-line state machine; :meth:`feed` returns a block when it opens one."""

    def __init__(self, path: StrPath, what: str) -> None:
        self.path, self.what = path, what
        self.block: RawBlock | None = None
        self.state = "outside"  # outside, block, labels, rows, after_loop
        self.blank = 0  # the blank line that ended the rows of a loop
        self.dirty = False  # the current line holds bytes that are not UTF-8

    def utf8(self, words: list[str], n: int) -> list[str]:
        """``words``, unless the line's bytes that are not UTF-8 fall inside one of them."""
        if self.dirty and any("\udc80" <= ch <= "\udcff" for w in words for ch in w):
            raise InputError(
                f"{self.where(n)}: a label or value holds bytes that are not UTF-8 (only "
                "comments may): save the file as UTF-8"
            )
        return words

    def where(self, n: int) -> str:
        return f"{self.path}: line {n}"

    def feed(self, text: str, n: int) -> RawBlock | None:
        stripped = text.strip()
        if stripped.startswith("data_"):
            self.block = RawBlock(name=self.utf8(stripped.split()[:1], n)[0][5:])
            self.state = "block"
            return self.block
        if self.state == "rows" and not stripped:
            self.state, self.blank = "after_loop", n
            return None
        if not stripped or stripped[0] in "#;" or self.block is None:
            return None  # blank lines, comments; RELION ignores text outside a block
        if self.state == "block":
            self._block_line(stripped, n)
        elif self.state == "labels" and stripped.startswith("_"):
            self._add_label(self.utf8(stripped.split()[:1], n)[0][1:], n)
        elif self.state in ("labels", "rows"):
            self._add_row(stripped, n)
        elif self.state == "after_loop":
            raise InputError(
                f"{self.where(n)}: a row of data_{self.block.name} after the blank line "
                f"{self.blank}; RELION ends the table at a blank line and would ignore this "
                "row and the rest: remove the blank line (or the rows after it)"
            )
        return None

    def _block_line(self, stripped: str, n: int) -> None:
        assert self.block is not None
        if stripped.startswith("loop_"):
            if self.block.labels:
                raise InputError(
                    f"{self.where(n)}: data_{self.block.name} has a loop_ after list-style "
                    "values (_label value lines); write them as two blocks"
                )
            self.block.is_list, self.state = False, "labels"
            return
        words = self.utf8(tokens(stripped, self.where(n)), n)
        if not words or not words[0].startswith("_"):
            raise InputError(
                f"{self.where(n)}: '{_short(stripped)}' in data_{self.block.name} is neither "
                "a _label value line nor loop_"
            )
        if len(words) < 2:
            raise InputError(f"{self.where(n)}: {words[0]} has no value")
        self._add_label(words[0][1:], n)
        if not self.block.rows:
            self.block.rows.append([])
            self.block.lines.append(n)
        self.block.rows[0].append(words[1])

    def _add_label(self, label: str, n: int) -> None:
        assert self.block is not None
        self.block.labels.append(label)
        self.block.label_lines.append(n)

    def _add_row(self, stripped: str, n: int) -> None:
        assert self.block is not None
        self.state = "rows"
        words = self.utf8(tokens(stripped, self.where(n)), n)
        if len(words) != len(self.block.labels):
            raise InputError(
                f"{self.where(n)}: data_{self.block.name} has {len(self.block.labels)} labels "
                f"but this row has {len(words)} values: '{_short(stripped)}'"
            )
        self.block.rows.append(words)
        self.block.lines.append(n)


def tokens(line: str, where: str) -> list[str]:
    """The values of one line, as RELION's ``nextTokenInSTAR`` splits it: blank-separated
    words, quoted strings ("a b" or 'a b', ending at a quote followed by a blank; a quote
    after the escape character \\a does not end it, and \\a itself is dropped), and a ``#``
    at the start of a word ends the line."""
    if '"' not in line and "'" not in line and "#" not in line:
        return line.split()  # the common case, fast
    out: list[str] = []
    i, n = 0, len(line)
    while i < n:
        while i < n and line[i] in " \t":
            i += 1
        if i >= n or line[i] == "#":
            break
        if line[i] in "\"'":
            quote, j = line[i], i + 1
            while j < n and not (
                line[j] == quote and line[j - 1] != "\a" and (j + 1 == n or line[j + 1] in " \t")
            ):
                j += 1
            if j >= n:
                raise InputError(f"{where}: a quoted value has no closing {quote}")
            out.append(line[i + 1 : j].replace("\a", ""))
            i = j + 1
        else:
            j = i
            while j < n and line[j] not in " \t":
                j += 1
            out.append(line[i:j])
            i = j
    return out


def _short(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _check_labels(b: RawBlock, path: StrPath) -> None:
    seen: dict[str, int] = {}
    for label, n in zip(b.labels, b.label_lines, strict=True):
        if label in seen:
            raise InputError(
                f"{path}: line {n}: data_{b.name} has the label {label} more than once "
                f"(first on line {seen[label]})"
            )
        seen[label] = n


def _frame(b: RawBlock) -> pd.DataFrame:
    """The block as a DataFrame indexed by line number; see :func:`read_star`."""
    # loops: each row's line; a list: the line of its first label ("list": Table looks up
    # each label's own line when it reports one)
    index = pd.Index(b.lines, dtype=np.int64, name="list" if b.is_list else "line")
    columns: dict[str, Any] = {}
    for k, label in enumerate(b.labels):
        values = [row[k] for row in b.rows]
        columns[label] = values if label in STRING_LABELS else _numeric(values)
    return pd.DataFrame(columns, index=index, columns=b.labels)


def _numeric(values: list[str]) -> Any:
    """int64 or float64 if every value is a finite number, else the texts unchanged."""
    if not values:
        return np.array([], dtype=np.float64)
    try:
        # note: "1e999" and "nan" parse; they stay text so that messages can quote them
        series = pd.to_numeric(pd.Series(values, dtype=object))
    except (ValueError, TypeError):
        return values
    arr = series.to_numpy()
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        return values
    if arr.dtype.kind not in "if":
        return values
    return arr


@functools.lru_cache(maxsize=8)
def _raw_blocks(path: str, stamp: tuple[int, int]) -> dict[str, RawBlock]:
    return read_raw(Path(path), path, "STAR file")


def _raw_block(path: StrPath, block: str) -> RawBlock | None:
    """Block ``data_<block>`` as written, read again (once per file version): for messages
    only, so None when the file is gone or no longer parses."""
    try:
        st = os.stat(path)
        return _raw_blocks(str(path), (st.st_mtime_ns, st.st_size)).get(block)
    except (OSError, InputError):
        return None


def raw_text(path: StrPath, block: str, label: str, line: int) -> str | None:
    """The text written for ``label`` in the row on ``line`` of ``data_<block>``, or None."""
    b = _raw_block(path, block)
    if b is None or label not in b.labels or line not in b.lines:
        return None
    return b.rows[b.lines.index(line)][b.labels.index(label)]


def label_line(path: StrPath, block: str, label: str) -> int | None:
    """The line of ``label`` in a list-style block, or None."""
    b = _raw_block(path, block)
    if b is None or not b.is_list or label not in b.labels:
        return None
    return b.label_lines[b.labels.index(label)]


def require_block(
    blocks: dict[str, pd.DataFrame], name: str, path: StrPath, what: str
) -> pd.DataFrame:
    if name not in blocks:
        raise InputError(f"{path}: {what} has no data_{name} block")
    return blocks[name]


class Table:
    """A STAR table with typed, error-reporting column access.

    ``df`` holds the block's rows (re-indexed 0..n-1); ``path`` and ``block`` name the file
    and the ``data_`` block in error messages, which also give the row's line in the file
    and quote the value as written there.  Numeric values are checked against
    :data:`~napari_subtomo_recon.io.labels.STAR_DOMAINS`.
    """

    def __init__(self, df: pd.DataFrame, path: StrPath, block: str):
        self.lines: list[int] | None = (
            [int(x) for x in df.index] if df.index.name in ("line", "list") else None
        )
        self.is_list = df.index.name == "list"
        self.df: pd.DataFrame = df.reset_index(drop=True)
        self.path: str = str(path)
        self.block: str = block

    def __len__(self) -> int:
        return len(self.df)

    def __contains__(self, label: str) -> bool:
        return label in self.df.columns

    def has_all(self, *labels: str) -> bool:
        return all(label in self.df.columns for label in labels)

    def line(self, label: str | None, row: int | None) -> int | None:
        """The line in the file that holds ``label`` of ``row`` (None if unknown)."""
        if label is not None and self.is_list:
            own = label_line(self.path, self.block, label)  # one label per line
            if own is not None:
                return own
        if row is None or self.lines is None or not 0 <= row < len(self.lines):
            return None
        return self.lines[row]

    def where(self, label: str | None = None, row: int | None = None) -> str:
        s = f"{self.path}: data_{self.block}"
        if row is not None:
            s += f" row {row + 1}"
        line = self.line(label, row)
        if line is not None:
            s += f" (line {line})"
        if label is not None:
            s += f" {label}"
        return s

    def text(self, label: str, row: int) -> str:
        """The value of ``label`` in ``row`` as written in the file (for messages)."""
        line = self.line(None, row)
        raw = None if line is None else raw_text(self.path, self.block, label, line)
        return str(self.df[label].iloc[row]) if raw is None else raw

    def missing(self, label: str) -> InputError:
        return InputError(f"{self.path}: data_{self.block} has no {label} column")

    def floats(self, label: str, default: float | None = None) -> FloatArray:
        """A numeric column as float64, shape (rows,); ``default`` fills a missing column.

        Every value must be a finite number inside the label's domain."""
        if label not in self.df.columns:
            if default is None:
                raise self.missing(label)
            return np.full(len(self.df), float(default))
        return self._checked(label, slice(None))

    def bad(self, label: str, row: int, problem: str) -> InputError:
        """``path: data_block row r (line n) label: 'text as written' problem``."""
        return InputError(f"{self.where(label, row)}: '{self.text(label, row)}' {problem}")

    def _checked(self, label: str, rows: slice) -> FloatArray:
        """Rows ``rows`` of column ``label`` as float64, each a finite number in the
        label's domain (:data:`~.labels.STAR_DOMAINS`)."""
        from .labels import STAR_DOMAINS

        values: FloatArray = pd.to_numeric(self.df[label].iloc[rows], errors="coerce").to_numpy(
            dtype=np.float64
        )
        row_of = np.arange(len(self.df))[rows]
        bad = np.flatnonzero(~np.isfinite(values))
        if bad.size:
            raise self.bad(label, int(row_of[bad[0]]), "is not a finite number")
        domain = STAR_DOMAINS.get(label)
        out = np.zeros(0, np.intp) if domain is None else domain.outside(values)
        if domain is not None and out.size:
            r = int(out[0])
            problem = domain.problem(float(values[r])) or "is out of range"
            raise self.bad(label, int(row_of[r]), problem)
        return values

    def ints(self, label: str, default: int | None = None) -> IntArray:
        """A column of whole numbers as int64, shape (rows,) (``default`` as in ``floats``)."""
        values = self.floats(label, None if default is None else float(default))
        bad = np.flatnonzero(values != np.round(values))
        if bad.size:
            raise self.bad(label, int(bad[0]), "is not an integer")
        return values.astype(np.int64)

    def strings(self, label: str, default: str | None = None) -> list[str]:
        if label not in self.df.columns:
            if default is None:
                raise self.missing(label)
            return [default] * len(self.df)
        return [str(v) for v in self.df[label].tolist()]

    def float_at(self, label: str, row: int, default: float | None = None) -> float:
        """One value as a float, checked like :meth:`floats`."""
        if label not in self.df.columns:
            if default is None:
                raise self.missing(label)
            return float(default)
        return float(self._checked(label, slice(row, row + 1))[0])

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
    bad = f"{where}: '{text}' is not a vector of finite numbers ([a,b,...])"
    try:
        vals = np.array([float(x) for x in t.replace(",", " ").split()], dtype=np.float64)
    except ValueError:
        raise InputError(bad) from None
    if not np.all(np.isfinite(vals)):
        raise InputError(bad)
    if length is not None and vals.size != length:
        raise InputError(f"{where}: '{text}' has {vals.size} numbers, not {length}")
    return vals


def format_vector(v: Iterable[float]) -> str:
    """``[a,b,c]`` with every number written in full (``repr``)."""
    return "[" + ",".join(repr(float(x)) for x in v) + "]"


def write_star(
    blocks: Mapping[str, pd.DataFrame | Mapping[str, Any]], path: StrPath, atomic: bool = True
) -> None:
    """Write blocks in the given order (dicts become list-style blocks), through a
    temporary name unless ``atomic`` is False (``path`` is one already)."""
    from .atomic import atomic_path

    if not atomic:
        starfile.write(blocks, path, float_format="%.6f")
        return
    with atomic_path(path) as tmp:
        write_star(blocks, tmp, atomic=False)
