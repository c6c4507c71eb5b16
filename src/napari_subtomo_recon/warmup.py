"""Compile (or load from Numba's cache) every kernel a job uses, before the first job.

``python -m napari_subtomo_recon.warmup`` reconstructs a tiny simulated data set along
each path a job can take (fast path with and without pre-binning, RELION's exact path,
symmetry, cropping) so that Numba compiles each kernel once and caches it.  On a fresh
install that takes about 20 s on 2 cores; with a warm cache a few seconds.  The
napari widget starts it in the background when it opens, so the first Run usually finds
the cache warm.  It reports through :mod:`.events` like ``subtomo-recon``.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from . import events as ev

SECONDS_PER_KERNEL = 1.8  # measured: 12 kernels in 19-21 s on 2 cores (two are NumPy since)

_CORE = ("extraction", "insertion", "reconstruction", "symmetrise")


def kernels() -> dict[str, Any]:
    """Every cached Numba kernel of the package, by ``module.name``."""
    import importlib

    out = {}
    for name in _CORE:
        mod: ModuleType = importlib.import_module(f"napari_subtomo_recon.core.{name}")
        for attr, obj in vars(mod).items():
            if getattr(obj, "_cache", None) is None or not hasattr(obj, "py_func"):
                continue
            if obj.targetoptions.get("inline", "never") == "always":
                continue  # compiled into its callers, never cached on its own
            out[f"{name}.{attr}"] = obj
    return out


def cold_kernels() -> list[str]:
    """Kernels without an entry in Numba's cache (they will be compiled)."""
    cold = []
    for name, k in kernels().items():
        try:
            index = k._cache._cache_file._index_path
        except AttributeError:  # Numba's internals changed: assume it has to compile
            cold.append(name)
            continue
        if not os.path.exists(index):
            cold.append(name)
    return cold


def _paths() -> list[tuple[str, list[str]]]:
    common = ["--i", "optimisation_set.star", "--b", "16", "--bin", "2", "--j", "2"]
    return [
        ("fast path", [*common, "--prebin", "always", "--crop", "12", "--sym", "C2"]),
        ("fast path without pre-binning", [*common, "--prebin", "never"]),
        ("RELION's exact path", [*common, "--exact"]),
    ]


def warm(report: Any = None) -> float:
    """Run every path once; returns the seconds it took.  ``report(Progress)``."""
    from .cli import parse_args
    from .job import run_to_completion
    from .simulate import simulate

    t0 = time.perf_counter()
    paths = _paths()
    cold = cold_kernels()
    total = len(paths)
    if cold:
        msg = (
            f"compiling {len(cold)} of {len(kernels())} kernels for this installation "
            f"(once; about {_estimate(len(cold))})"
        )
    else:
        msg = "loading the compiled kernels"

    def say(done: int, text: str) -> None:
        if report is not None:
            elapsed = time.perf_counter() - t0
            report(ev.Progress(ev.Stage.COMPILING, done, total, message=text, elapsed=elapsed))

    say(0, msg)
    with tempfile.TemporaryDirectory(prefix="subtomo-recon-warmup-") as tmp:
        root = Path(tmp)
        simulate(
            root, n_tomograms=1, particles_per_tomogram=4, n_tilts=5, image_size=(96, 96),
            tomo_size=(96, 96, 48), box=16, binning=2.0, noise=False,
        )  # fmt: skip
        for k, (what, argv) in enumerate(paths):
            say(k, f"{msg}: {what}")
            params, _ = parse_args([*argv, "--o", f"job{k}/"])
            run_to_completion(params, root=str(root))
    say(total, "kernels ready")
    return time.perf_counter() - t0


def _estimate(n_cold: int) -> str:
    seconds = n_cold * SECONDS_PER_KERNEL
    return f"{seconds / 60:.0f} min" if seconds >= 90 else f"{seconds:.0f} s"


def main(argv: list[str] | None = None) -> int:
    """Warm the cache; with ``SUBTOMO_EVENTS=stderr`` report through events."""
    from .cli import helper_main

    def work(report: Callable[[ev.Progress], None]) -> ev.Result:
        return ev.Result(output_dir=Path(tempfile.gettempdir()), elapsed=warm(report))

    return helper_main(
        "subtomo-recon warm-up", work, lambda r: f"kernels ready in {r.elapsed:.1f} s"
    )


if __name__ == "__main__":
    raise SystemExit(main())
