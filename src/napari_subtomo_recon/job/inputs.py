"""The job's first stage: read every input file and cross-check them (headers only)."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import InputError
from ..params import ReconstructParams


@dataclass
class Inputs:
    tomograms: Any  # io.TomogramSet
    particles: Any  # io.ParticleSet
    trajectories: list[np.ndarray] | None
    by_tomogram: list[np.ndarray]  # particle indices per tomogram (global-table order)
    optimisation_set: Any  # io.OptimisationSet
    warnings: list[str] = field(default_factory=list)


def load_inputs(params: ReconstructParams, root: str | None = None) -> Inputs:
    """Read and cross-check every input file (headers only for images)."""
    from ..io import read_particle_set, read_tomogram_set, read_trajectories, resolve_inputs
    from ..io.particles import VISIBLE_FRAMES

    notes: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        opt = resolve_inputs(
            params.optimisation_set, params.particles, params.tomograms, params.trajectories,
            root,
        )  # fmt: skip
        tomos = read_tomogram_set(opt.tomograms, root=root)
        parts = read_particle_set(opt.particles, tomos, root)
        traj = read_trajectories(opt.trajectories, parts, root) if opt.trajectories else None
    notes += [str(w.message) for w in caught]
    by_tomo = _group_by_tomogram(params, opt, tomos, parts, notes)
    if params.use_visible_frames and VISIBLE_FRAMES not in parts.rows:
        notes.append(
            f"--use_visible_frames: the particles in {opt.particles} have no "
            "rlnTomoVisibleFrames; every tilt the particle lies inside is used, as RELION does"
        )
    if not parts.has_half_sets:
        notes.append(
            f"the particles in {opt.particles} have no rlnRandomSubset: joining all particles "
            "in one set; only merged maps are written"
        )
    for k, idx in enumerate(by_tomo):
        if idx:
            _check_optics(opt, tomos.tomograms[k], parts, idx)
            if traj is not None:
                _check_trajectories(opt, tomos.tomograms[k], parts, traj, idx)
    return Inputs(
        tomograms=tomos,
        particles=parts,
        trajectories=traj,
        by_tomogram=[np.array(lst, dtype=np.int64) for lst in by_tomo],
        optimisation_set=opt,
        warnings=notes,
    )


def _group_by_tomogram(
    params: ReconstructParams, opt: Any, tomos: Any, parts: Any, notes: list[str]
) -> list[list[int]]:
    """Particle indices per tomogram; particles of unknown tomograms refused (or dropped)."""
    index = {name: k for k, name in enumerate(tomos.names())}
    by_tomo: list[list[int]] = [[] for _ in tomos.tomograms]
    unknown: set[str] = set()
    for i, tn in enumerate(parts.tomo_names):
        k = index.get(tn)
        if k is None:
            unknown.add(tn)
        else:
            by_tomo[k].append(i)
    if unknown:
        names = ", ".join(sorted(unknown))
        if not params.ignore_unknown_tomograms:
            first = next(i for i, tn in enumerate(parts.tomo_names) if tn in unknown)
            raise InputError(
                f"{opt.particles}: data_particles row {first + 1} rlnTomoName "
                f"'{parts.tomo_names[first]}' is not in {opt.tomograms} (unknown: {names}); "
                "--ignore_unknown_tomograms drops such particles as RELION does"
            )
        notes.append(
            f"{opt.particles}: particles of tomograms not in {opt.tomograms} are ignored: {names}"
        )
    if not any(by_tomo):
        raise InputError(
            f"{opt.particles}: no particle belongs to a tomogram of {opt.tomograms} "
            "(compare the rlnTomoName values)"
        )
    empty = [tomos.tomograms[k].name for k, lst in enumerate(by_tomo) if not lst]
    if empty:
        notes.append("no particles for tomograms: " + ", ".join(empty))
    return by_tomo


def _check_optics(opt: Any, ts: Any, parts: Any, idx: list[int]) -> None:
    """RELION's validateParticleOptics: the particles' optics group agree with the tilt
    series (tolerance 1e-3)."""
    for g in np.unique(parts.optics_group[idx]):
        for label, arr, val in (
            ("rlnSphericalAberration", parts.optics.cs, ts.cs),
            ("rlnAmplitudeContrast", parts.optics.q0, ts.q0),
            ("rlnVoltage", parts.optics.voltage, ts.voltage),
            ("rlnTomoTiltSeriesPixelSize", parts.optics.pixel_size, ts.pixel_size),
        ):
            if arr is not None and abs(arr[g - 1] - val) >= 1e-3:
                raise InputError(
                    f"{opt.particles}: data_optics row {g} {label} = {arr[g - 1]} differs from "
                    f"{val} of tomogram '{ts.name}' in {opt.tomograms}"
                )


def _check_trajectories(
    opt: Any, ts: Any, parts: Any, traj: list[np.ndarray], idx: list[int]
) -> None:
    for i in idx:
        if traj[i].shape[0] != ts.frame_count:
            raise InputError(
                f"{opt.trajectories}: data_{parts.names[i]} (trajectory of particle "
                f"'{parts.names[i]}') has {traj[i].shape[0]} rows, tomogram "
                f"'{ts.name}' has {ts.frame_count} frames"
            )


def input_files(
    params: ReconstructParams, inp: Inputs, root: str | None, result_only: bool = False
) -> dict[str, str]:
    """Every file the job reads or its optimisation set names, as paths to open (relative
    paths joined with the project folder ``root``), each once, with a description for
    messages.  ``result_only``: those the maps depend on (star files, tilt images,
    a symmetry file), for the checkpoint fingerprint."""
    import os

    from ..io.star import at

    opt = inp.optimisation_set
    named = {
        "particle set": opt.particles, "tomogram set": opt.tomograms,
        "trajectory set": opt.trajectories,
    }  # fmt: skip
    if not result_only:
        named |= {
            "reference map": opt.reference1, "reference map (half 2)": opt.reference2,
            "reference mask": opt.mask, "optimisation set": params.optimisation_set,
        }  # fmt: skip
    out = {at(root, f): f"the {what} {f}" for what, f in named.items() if f}
    if os.path.isfile(at(root, params.symmetry)):
        out.setdefault(at(root, params.symmetry), f"the symmetry file {params.symmetry}")
    for ts in inp.tomograms.tomograms:
        out.setdefault(ts.star_file, f"the tilt-series file {ts.star_file}")
        for path, _ in ts.frames:  # (already joined with root by the reader)
            out.setdefault(path, f"the tilt images {path}")
    return out
