"""STAR files as RELION reads them (src/metadata_table.cpp), with errors that name the
file's real line and quote the text as written."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import starfile

from napari_subtomo_recon.errors import InputError
from napari_subtomo_recon.io.star import STRING_LABELS, Table, read_star, tokens

FIXTURES = Path(__file__).parents[1] / "fixtures" / "relion"

TABLE = """# version 50001

data_particles

loop_
_rlnTomoName #1
_rlnCoordinateX #2
_rlnAngleRot #3
TS_01 10.5 30
TS_01 20 -45.25
TS_02 30 0
"""


def write(tmp_path: Path, text: str | bytes, name: str = "t.star") -> Path:
    p = tmp_path / name
    if isinstance(text, bytes):
        p.write_bytes(text)
    else:
        p.write_text(text)
    return p


def particles(path: Path) -> pd.DataFrame:
    return read_star(path)["particles"]


def expected() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "rlnTomoName": ["TS_01", "TS_01", "TS_02"],
            "rlnCoordinateX": [10.5, 20.0, 30.0],
            "rlnAngleRot": [30, -45.25, 0],
        },  # fmt: skip
        index=pd.Index([9, 10, 11], name="line"),
    )


def same(df: pd.DataFrame, ref: pd.DataFrame) -> None:
    pd.testing.assert_frame_equal(df, ref, check_dtype=False, check_index_type=False)


@pytest.mark.parametrize("case", sorted(FIXTURES.rglob("*.star")), ids=lambda p: p.name)
def test_every_fixture_reads_as_starfile_reads_it(case):
    """An independent reader (the starfile package) gives the same tables."""
    ours = read_star(case)
    ref = starfile.read(case, always_dict=True, parse_as_string=STRING_LABELS)
    assert list(ours) == list(ref)
    for name, df in ours.items():
        other = ref[name]
        if isinstance(other, dict):
            other = pd.DataFrame({k: [v] for k, v in other.items()})
        assert list(df.columns) == list(other.columns), name
        for label in df.columns:
            a, b = df[label].to_numpy(), other[label].to_numpy()
            if a.dtype.kind in "if":
                np.testing.assert_array_equal(a, b.astype(np.float64), err_msg=f"{name} {label}")
            else:
                assert [str(x) for x in a] == [str(x) for x in b], (name, label)


def test_the_plain_table(tmp_path):
    same(particles(write(tmp_path, TABLE)), expected())


def test_comments_between_labels_and_rows(tmp_path):
    text = TABLE.replace("_rlnCoordinateX #2\n", "# picked by hand\n_rlnCoordinateX #2\n; x\n")
    text = text.replace("TS_01 20 -45.25\n", "TS_01 20 -45.25   # a remark\n# between rows\n")
    df = particles(write(tmp_path, text))
    ref = expected()
    ref.index = pd.Index([11, 12, 14], name="line")
    same(df, ref)


def test_crlf_line_ends_and_latin1_bytes_in_comments(tmp_path):
    data = TABLE.replace("# version 50001", "# version 50001 \xe9t\xe9").encode("latin-1")
    same(particles(write(tmp_path, data.replace(b"\n", b"\r\n"))), expected())


def test_quoted_values(tmp_path):
    text = TABLE.replace("TS_02 30 0", '"TS 02" 30 0').replace("TS_01 10.5", "'TS_01' 10.5")
    assert particles(write(tmp_path, text))["rlnTomoName"].tolist() == ["TS_01", "TS_01", "TS 02"]
    assert tokens('a \'b c\' "d"e" # f', "x") == ["a", "b c", 'd"e']


def test_a_list_block_and_a_loop(tmp_path):
    text = "data_general\n\n_rlnTomoSubTomosAre2DStacks 1\n_rlnOpticsGroupName  'my group'\n\n"
    blocks = read_star(write(tmp_path, text + TABLE))
    assert blocks["general"]["rlnTomoSubTomosAre2DStacks"].tolist() == [1]
    assert blocks["general"]["rlnOpticsGroupName"].tolist() == ["my group"]
    same(blocks["particles"], expected().set_axis(pd.Index([14, 15, 16], name="line")))


@pytest.mark.parametrize(
    ("edit", "fragments"),
    [
        (lambda t: t.replace("TS_01 20 -45.25\n", "TS_01 20 -45.25\n\n"),
         ["t.star: line 12: a row of data_particles after the blank line 11",
          "RELION ends the table at a blank line"]),
        (lambda t: t.replace("TS_01 20 -45.25", "TS_01 20"),
         ["t.star: line 10: data_particles has 3 labels but this row has 2 values: 'TS_01 20'"]),
        (lambda t: t.replace("TS_02 30 0", "TS_02 30 0 7"),
         ["t.star: line 11:", "3 labels but this row has 4 values"]),
        (lambda t: t.replace("TS_02 30", "'TS_02 30"),
         ["t.star: line 11: a quoted value has no closing '"]),
        (lambda t: t.replace("_rlnAngleRot #3", "_rlnCoordinateX #3"),
         ["t.star: line 8: data_particles has the label rlnCoordinateX more than once "
          "(first on line 7)"]),
        (lambda t: "# nothing here\n", ["t.star: STAR file contains no data blocks"]),
    ],
)  # fmt: skip
def test_grammar_errors_name_the_real_line(tmp_path, edit, fragments):
    with pytest.raises(InputError) as e:
        read_star(write(tmp_path, edit(TABLE)))
    for f in fragments:
        assert f in str(e.value), (f, str(e.value))


def test_values_are_quoted_as_written_with_their_line(tmp_path):
    text = TABLE.replace("20 -45.25", "NaN -45.25").replace("30 0", "30 1e999")
    t = Table(particles(write(tmp_path, text)), tmp_path / "t.star", "particles")
    with pytest.raises(InputError, match=r"data_particles row 2 \(line 10\) rlnCoordinateX: "
                       r"'NaN' is not a finite number"):  # fmt: skip
        t.floats("rlnCoordinateX")
    with pytest.raises(InputError, match=r"row 3 \(line 11\) rlnAngleRot: '1e999' is not a finite"):
        t.floats("rlnAngleRot")


def test_line_numbers_follow_selected_rows(tmp_path):
    path = write(tmp_path, TABLE.replace("TS_02 30 0", "TS_02 -30.50 0"))
    df = particles(path)
    t = Table(df[df["rlnTomoName"] == "TS_02"], path, "particles")
    assert t.where("rlnCoordinateX", 0) == f"{path}: data_particles row 1 (line 11) rlnCoordinateX"
    assert t.text("rlnCoordinateX", 0) == "-30.50"  # as written, not the parsed -30.5


def test_domains_quote_the_text_and_give_the_reason(tmp_path):
    text = (
        "data_TS_01\n\nloop_\n_rlnMicrographPreExposure\n_rlnCtfScalefactor\n"
        "0.0 1.0\n3.00 0.9\n-3.000 1.0\n"
    )
    path = write(tmp_path, text)
    t = Table(read_star(path)["TS_01"], path, "TS_01")
    with pytest.raises(InputError) as e:
        t.floats("rlnMicrographPreExposure")
    assert f"{path}: data_TS_01 row 3 (line 8) rlnMicrographPreExposure: '-3.000' must be ≥ 0" in (
        str(e.value)
    )
    assert "a negative dose amplifies" in str(e.value)
    path = write(tmp_path, text.replace("-3.000 1.0", "3 0e0"))
    t = Table(read_star(path)["TS_01"], path, "TS_01")
    with pytest.raises(InputError, match=r"row 3 \(line 8\) rlnCtfScalefactor: '0e0' must be in "
                       r"\(0, 100\]"):  # fmt: skip
        t.floats("rlnCtfScalefactor")


def test_a_list_value_names_its_own_line(tmp_path):
    path = write(tmp_path, "data_global\n\n_rlnTomoName TS_01\n_rlnVoltage -300\n")
    t = Table(read_star(path)["global"], path, "global")
    with pytest.raises(InputError, match=r"data_global row 1 \(line 4\) rlnVoltage: '-300' must"):
        t.float_at("rlnVoltage", 0)


def test_bytes_that_are_not_utf8_outside_a_comment(tmp_path):
    data = TABLE.replace("TS_02 30 0", "TS_\xe902 30 0").encode("latin-1")
    with pytest.raises(InputError, match=r"t.star: line 11: a label or value holds bytes that "
                       r"are not UTF-8"):  # fmt: skip
        read_star(write(tmp_path, data))
    data = TABLE.replace("TS_02 30 0", "TS_02 30 0 # \xe9t\xe9").encode("latin-1")
    same(particles(write(tmp_path, data)), expected())
