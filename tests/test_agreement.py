"""The default (fast) path against RELION's path (``--exact``, RELION-exact by
``test_parity.py``) at the geometry of the tutorial's three Reconstruct particle stages,
for every map a job writes (issue #17).

Each stage keeps its binning, its fast-path window ratio and its crop fraction, at a
smaller box: bin 6 (box 192 → 48, crop 96 → 24, C6: tilts binned by 4 before cutting
72-px windows, as 1152 → 288 px at full size), bin 2 (box 256 → 64, crop 128 → 32: tilts
binned by 4/3, windows 96 px as 512 → 384) and bin 1 (box 512 → 128, crop 192 → 48:
RELION's own windows; only the batched single-precision insertion differs).
"""

import mrcfile
import numpy as np
import pytest

from napari_subtomo_recon.cli import parse_args
from napari_subtomo_recon.core.extraction import fast_window
from napari_subtomo_recon.core.fsc import fsc
from napari_subtomo_recon.job import run_to_completion
from napari_subtomo_recon.simulate import simulate

STAGES = {
    # name: (simulation, flags, full-size (box, bin) whose window ratio it keeps)
    "bin6": (
        {"binning": 6.0, "box": 48, "image_size": (768, 768), "tomo_size": (768, 768, 300)},
        ["--b", "48", "--crop", "24", "--bin", "6", "--sym", "C6"],
        (192, 6.0),
    ),
    "bin2": (
        {"binning": 2.0, "box": 64, "image_size": (512, 512), "tomo_size": (512, 512, 200)},
        ["--b", "64", "--crop", "32", "--bin", "2"],
        (256, 2.0),
    ),
    "bin1": (
        {"binning": 1.0, "box": 128, "image_size": (512, 512), "tomo_size": (512, 512, 200)},
        ["--b", "128", "--crop", "48", "--bin", "1"],
        (512, 1.0),
    ),
}
DENSITY = ["merged", "half1", "half2", "merged_full", "half1_full", "half2_full",
           "data_merged", "data_half1", "data_half2"]  # fmt: skip
WEIGHTS = ["weight_merged", "weight_half1", "weight_half2"]


def test_the_stages_keep_the_full_size_window_ratios():
    ratios = {}
    for name, (_, flags, (box, binning)) in STAGES.items():
        small = fast_window(int(flags[1]), float(flags[5]))
        full = fast_window(box, binning)
        assert small[0] * full[1] == small[1] * full[0], (flags, small, full)
        ratios[name] = small[:2]
    assert ratios == {"bin6": (4, 1), "bin2": (4, 3), "bin1": (1, 1)}


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_every_map_agrees_with_relions_path(stage, tmp_path, monkeypatch):
    sim, flags, _ = STAGES[stage]
    ds = simulate(tmp_path / "data", n_tomograms=1, n_tilts=21, particles_per_tomogram=16,
                  seed=17, **sim)  # fmt: skip
    monkeypatch.chdir(ds.root)
    maps = {}
    for mode in (["--exact"], ["--prebin", "always"]):
        out = tmp_path / mode[-1].strip("-")
        params, _ = parse_args(["--i", "optimisation_set.star", "--o", str(out), "--j", "2",
                                *flags, *mode])  # fmt: skip
        run_to_completion(params)
        maps[mode[0]] = out
    written = sorted(p.stem for p in maps["--exact"].glob("*.mrc"))
    assert written == sorted(DENSITY + WEIGHTS)
    assert sorted(p.stem for p in maps["--prebin"].glob("*.mrc")) == written
    for name in DENSITY:
        exact = mrcfile.read(maps["--exact"] / f"{name}.mrc")
        fast = mrcfile.read(maps["--prebin"] / f"{name}.mrc")
        low = float(fsc(fast, exact)[1:].min())
        print(f"{stage} {name}: lowest FSC {low:.5f}")
        assert low >= 0.995, f"{stage} {name}: FSC drops to {low:.4f}"
    for name in WEIGHTS:  # CTF² and dose from the same terms: rounding apart
        exact = mrcfile.read(maps["--exact"] / f"{name}.mrc").astype(np.float64)
        fast = mrcfile.read(maps["--prebin"] / f"{name}.mrc").astype(np.float64)
        rel = np.sqrt(((fast - exact) ** 2).sum() / (exact**2).sum())
        print(f"{stage} {name}: relative difference {rel:.2g}")
        assert rel <= 1e-5, f"{stage} {name}: relative difference {rel:.2g}"
