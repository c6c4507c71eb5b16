"""Every bad input gets a one-line error naming the culprit, before any output is written."""

import shutil
from pathlib import Path

import mrcfile
import numpy as np
import pandas as pd
import pytest
import starfile

from napari_subtomo_recon.cli import main

INPUTS = Path(__file__).parent / "fixtures" / "relion" / "inputs"
BASE = ["--i", "optimisation_set.star", "--o", "out", "--b", "32", "--bin", "2", "--j", "1"]


@pytest.fixture
def data(tmp_path, monkeypatch):
    """A writable copy of the RELION 5 fixture inputs (cwd), and one of the motion set."""
    shutil.copytree(INPUTS / "r5", tmp_path / "r5")
    shutil.copytree(INPUTS / "extra", tmp_path / "extra")
    monkeypatch.chdir(tmp_path / "r5")
    return tmp_path


def fails(capsys, argv, *fragments):
    code = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1
    assert len(err) == 1 and err[0].startswith("subtomo-recon: error: "), err
    for frag in fragments:
        assert frag in err[0], (frag, err[0])
    assert not Path("out").exists() or not any(Path("out").iterdir()), "output written"
    return err[0]


def edit_star(path, block, fn):
    blocks = starfile.read(
        path, always_dict=True, parse_as_string=["rlnMicrographName", "rlnTomoName"]
    )
    blocks[block] = fn(blocks[block])
    starfile.write(blocks, path)


def test_missing_files(data, capsys):
    fails(capsys, [*BASE, "--t", "nope.star"], "nope.star", "tomogram set not found")
    fails(capsys, [*BASE, "--p", "nope.star"], "nope.star", "particle set not found")
    fails(capsys, [*BASE, "--mot", "nope.star"], "nope.star", "trajectory set not found")
    Path("tilt_series/TS_02.star").unlink()
    fails(capsys, BASE, "tilt_series/TS_02.star", "not found", "tomograms.star")


def test_missing_stack(data, capsys):
    Path("tilt_series/TS_01.mrcs").unlink()
    fails(capsys, BASE, "tilt_series/TS_01.mrcs", "not found", "TS_01.star")


def test_star_syntax_error(data, capsys):
    Path("particles.star").write_text(
        "data_particles\nloop_\n_rlnTomoName #1\n_rlnAngleRot #2\nTS_01\n"
    )
    fails(capsys, BASE, "particles.star")


def test_missing_required_label(data, capsys):
    edit_star("tilt_series/TS_01.star", "TS_01", lambda d: d.drop(columns=["rlnDefocusU"]))
    fails(capsys, BASE, "tilt_series/TS_01.star", "data_TS_01", "rlnDefocusU")


def test_particle_of_unknown_tomogram(data, capsys):
    edit_star(
        "particles.star",
        "particles",
        lambda d: d.assign(rlnTomoName=["TS_01"] * (len(d) - 1) + ["TS_99"]),
    )
    fails(capsys, BASE, "particles.star", "TS_99", f"row {24}", "rlnTomoName")


def test_frame_reference_beyond_stack(data, capsys):
    def bad(d):
        d = d.copy()
        d.loc[3, "rlnMicrographName"] = "99@tilt_series/TS_01.mrcs"
        return d

    edit_star("tilt_series/TS_01.star", "TS_01", bad)
    fails(capsys, BASE, "TS_01.star", "row 4", "image 99", "holds 21")


def test_images_of_different_sizes(data, capsys):
    with mrcfile.new("small.mrc") as m:
        m.set_data(np.zeros((100, 90), np.float32))

    def bad(d):
        d = d.copy()
        d.loc[5, "rlnMicrographName"] = "small.mrc"
        return d

    edit_star("tilt_series/TS_01.star", "TS_01", bad)
    fails(capsys, BASE, "row 6", "90x100", "differs")


def test_truncated_mrc(data, capsys):
    p = Path("tilt_series/TS_02.mrcs")
    raw = p.read_bytes()
    p.write_bytes(raw[: len(raw) // 2])
    fails(capsys, BASE, "tilt_series/TS_02.mrcs", "not a readable MRC file")


@pytest.mark.parametrize("threads", ["1", "2"])
def test_non_finite_pixel_in_a_used_tilt(data, capsys, threads):
    with mrcfile.open("tilt_series/TS_01.mrcs", "r+") as m:
        d = m.data.copy()
        d[7, 80, 81] = np.nan
        m.set_data(d)
    argv = [*BASE[:-1], threads]  # BASE ends with --j 1
    fails(capsys, argv, "tilt_series/TS_01.mrcs", "image 8", "non-finite", "x=81, y=80")


@pytest.mark.parametrize("threads", ["1", "2"])
def test_the_first_bad_tilt_in_order_is_reported(data, capsys, threads):
    # frames 4 and 5 of TS_01 (images 9 and 13) are both bad; two threads check them at
    # the same time, and frame 4 is reported whichever check ends first
    with mrcfile.open("tilt_series/TS_01.mrcs", "r+") as m:
        d = m.data.copy()
        d[8, 10, 11] = np.inf
        d[12, 20, 21] = np.nan
        m.set_data(d)
    argv = [*BASE[:-1], threads]
    fails(capsys, argv, "TS_01.mrcs: image 9 (frame 4", "row 4", "x=11, y=10")


def test_empty_particle_set(data, capsys):
    edit_star("particles.star", "particles", lambda d: d.iloc[:0])
    fails(capsys, BASE, "particles.star", "no particles")


def test_invalid_half_set(data, capsys):
    edit_star(
        "particles.star", "particles", lambda d: d.assign(rlnRandomSubset=[1] * (len(d) - 1) + [3])
    )
    fails(capsys, BASE, "particles.star", "rlnRandomSubset", "row 24", "'3' must be in [1, 2]")


def test_trajectory_with_wrong_frame_count(data, capsys, monkeypatch):
    monkeypatch.chdir(data / "extra")
    blocks = starfile.read("motion.star", always_dict=True)
    name = [k for k in blocks if k != "general"][2]
    blocks[name] = blocks[name].iloc[:-1]
    starfile.write(blocks, "motion.star")
    fails(capsys, BASE, "motion.star", f"data_{name}", "20 rows")


@pytest.mark.parametrize(
    "flags, fragments",
    [
        (["--b", "0"], ["--b 0"]),
        (["--b", "33"], ["--b 33", "even"]),
        (["--crop", "40"], ["--crop 40", "--b 32"]),
        (["--bin", "0"], ["--bin 0"]),
        (["--sym", "Q7"], ["--sym Q7"]),
        (["--unknown"], ["unknown flag --unknown"]),
        (["--mem", "0.001"], ["--mem 0.001", "GB"]),
    ],
)
def test_invalid_flags(data, capsys, flags, fragments):
    argv = list(BASE)
    for k in range(0, len(flags), 2):
        if flags[k] in argv:
            i = argv.index(flags[k])
            argv[i : i + 2] = flags[k : k + 2]
        else:
            argv += flags[k : k + 2]
    fails(capsys, argv, *fragments)


def test_output_folder_not_writable(data, capsys):
    Path("afile").write_text("x")
    argv = [a if a != "out" else "afile/out" for a in BASE]
    fails(capsys, argv, "afile/out", "is a file")


def test_inputs_are_never_modified(data, capsys):
    before = {p: p.read_bytes() for p in Path(".").rglob("*") if p.is_file()}
    assert main(BASE) == 0
    capsys.readouterr()
    for p, content in before.items():
        assert p.read_bytes() == content, p
    pd.testing.assert_frame_equal(
        starfile.read("particles.star")["particles"],
        starfile.read(INPUTS / "r5" / "particles.star")["particles"],
    )


def edit_line(path, row, column, text):
    """Replace one value of row ``row`` (1-based) of the only loop in ``path``, as text."""
    lines = Path(path).read_text().splitlines()
    heads = ("#", "_", "data_", "loop_")
    first = next(i for i, ln in enumerate(lines) if ln and not ln.startswith(heads))
    words = lines[first + row - 1].split()
    words[column] = text
    lines[first + row - 1] = "  ".join(words)
    Path(path).write_text("\n".join(lines) + "\n")
    return first + row  # the 1-based line number


@pytest.mark.parametrize(
    ("column", "text", "problem"),
    [
        (3, "-3.00", "must be ≥ 0 (the dose in e/Å² before this tilt; a negative dose"),
        (8, "0", "must be in (0, 100]"),
        (4, "NaN", "is not a finite number"),
        (4, "1e999", "is not a finite number"),
    ],
)
def test_star_values_out_of_their_domain(data, capsys, column, text, problem):
    """Silently wrong maps before: a negative dose amplified, a zero CTF scale multiplied the
    map by ~1e8; now one line with the file, row, real line, label and the text as written."""
    line = edit_line("tilt_series/TS_01.star", 5, column, text)
    label = ["rlnMicrographPreExposure", "rlnDefocusU", "rlnCtfScalefactor"][
        [3, 4, 8].index(column)
    ]
    fails(
        capsys, BASE,
        f"tilt_series/TS_01.star: data_TS_01 row 5 (line {line}) {label}: '{text}' {problem}",
    )  # fmt: skip


def test_a_stack_named_without_an_image_number(data, capsys):
    line = edit_line("tilt_series/TS_01.star", 2, 0, "tilt_series/TS_01.mrcs")
    fails(
        capsys, BASE, f"data_TS_01 row 2 (line {line}) rlnMicrographName: "
        "'tilt_series/TS_01.mrcs' names a stack of 21 images without an image number",
        "write N@tilt_series/TS_01.mrcs",
    )  # fmt: skip


def test_a_star_file_with_a_comment_among_its_labels_still_works(data, capsys):
    p = Path("tilt_series/TS_02.star")
    p.write_text(
        p.read_text().replace("_rlnDefocusU #5\n", "_rlnDefocusU #5\n# fitted by CTFFIND\n")
    )
    assert main(BASE) == 0


def test_checks_running_together_report_in_frame_order():
    """Frame 0's check is slow and frame 1's fails at once: the two run together, and the
    error raised is frame 0's, as one thread would report it."""
    import time
    from types import SimpleNamespace

    from napari_subtomo_recon.errors import InputError
    from napari_subtomo_recon.job.runner import check_tilt_images

    class Reader:
        def first_non_finite(self, path, idx, what=""):
            if idx == 0:
                time.sleep(0.3)
            return (idx, idx)  # every image bad at (idx, idx)

    ts = SimpleNamespace(
        name="TS_01", source="ts.star", frames=[("ts.mrcs", 0), ("ts.mrcs", 1), ("ts.mrcs", 2)]
    )
    plan = SimpleNamespace(ts=ts, geo=SimpleNamespace(visible=np.ones((4, 3), bool)))
    for threads in (1, 2, 3):
        with pytest.raises(InputError, match=r"image 1 \(frame 1 .* x=0, y=0"):
            for _ in check_tilt_images([plan], Reader(), threads):
                pass
