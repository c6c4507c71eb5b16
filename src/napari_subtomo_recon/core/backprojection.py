"""Backprojection of all particles of one tilt series into the accumulators (spec §3-§4).

Work is organised tilt by tilt: one tilt image is in memory at a time and all
particles visible in it are processed in batches (cut out, FFT'd, CTF- and
dose-weighted, inserted).  Python runs once per batch, never per particle-tilt.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numba
import numpy as np
import scipy.fft as sfft
from numpy.typing import NDArray

from .arraytypes import (
    Complex64Array,
    Complex128Array,
    Float32Array,
    Float64Array,
    Int32Array,
    Int64Array,
    TiltSeriesLike,
)
from .ctf import TiltCtfTerms, ctf_constants, tilt_ctf_terms
from .dose import dose_weights, dose_x_ranges
from .extraction import (
    EDGE_FALLOFF,
    BinWork,
    FourierCrop,
    SliceTerms,
    TiltFilters,
    WindowCentres,
    bin_image,
    crop_rows,
    cropped_width,
    extract_windows,
    fast_window,
    finish_slices,
    shift_factors,
)
from .geometry import c_round
from .insertion import LANES, Accumulators, SliceBatch, insert_slices, slice_matrices
from .particles import ParticleGeometry
from .whitening import whitening_filter

__all__ = [
    "Accumulators",
    "Settings",
    "TiltSeriesTerms",
    "backproject",
    "packed_bytes",
    "tilt_series_terms",
]


def packed_bytes(box: int) -> int:
    """Bytes of one prepared slice (see :func:`~.insertion.packed_slices`)."""
    return (box + 1) * (box // 2 + 2) * 4 * LANES


@dataclass
class Settings:
    """The reconstruction options that shape the per-slice work."""

    box: int
    binning: float = 1.0
    do_ctf: bool = True
    circle_crop: bool = True
    cutoff_fract: float = 0.01
    whiten: bool = False
    exact: bool = False  # RELION's per-window extraction instead of binning each tilt once
    prebin: str = "auto"  # fast path: bin a tilt first "always", "never" or when it pays off
    threads: int = 1
    # prepared slices inserted in one pass over the accumulator's planes.  A plane's
    # pass reads a strip of every slice; with the strips prefetched (insertion._PREFETCH)
    # 256 slices were 2-4% faster than 128 at box 192 and 7-8% at box 256, 512 no faster
    # again (benchmarks/kernels.py insertion --batches); batch_bytes caps the memory (--mem):
    # 512 MiB is 244 slices at box 512, 13% faster than 122 there, and a bin-1 job's
    # peak memory is in the finalisation, not in the batches (job/plan.py)
    batch_slices: int = 256
    batch_bytes: int = 512 * 2**20
    # windows and their FFTs are made a few at a time so that they stay in cache
    # between extraction, FFT and the fused CTF step (~25% faster FFTs than 256 MiB)
    chunk_bytes: int = 8 * 2**20

    def insertion_batch(self) -> int:
        """Slices per insertion pass."""
        return max(1, min(self.batch_slices, self.batch_bytes // packed_bytes(self.box)))

    @property
    def window(self) -> int:
        """s02D: the extraction window in unbinned pixels."""
        return int(self.binning * self.box + 0.5)


_EMPTY3: Float64Array = np.zeros((0, 1, 1), np.float64)


@dataclass
class TiltSeriesTerms:
    """Per tilt series: what does not depend on the particle (fc frames, sh = s//2+1)."""

    P: Float64Array  # (fc, 4, 4)
    dose: Float32Array  # (fc, s, sh) float32
    x_ranges: Int32Array  # (fc, s) int32
    gamma_offset: Float64Array = field(default_factory=lambda: _EMPTY3)  # (G, s, sh) even Zernike
    odd_phase: Float64Array = field(default_factory=lambda: _EMPTY3)  # (G, s, sh) odd Zernike


def tilt_series_terms(
    ts: TiltSeriesLike,
    P: Float64Array,
    st: Settings,
    gamma_offset: Float64Array | None = None,
    odd_phase: Float64Array | None = None,
) -> TiltSeriesTerms:
    """Dose weights and their cut-off for every frame, with the projections ``P``
    (fc, 4, 4) and the optics groups' Zernike phases (G, s, s//2+1), if any."""
    binned_px = ts.pixel_size * st.binning
    dose = dose_weights(ts.pre_exposure, st.box, binned_px, ts.bfactor_per_dose)
    terms = TiltSeriesTerms(P=P, dose=dose, x_ranges=dose_x_ranges(dose, st.cutoff_fract))
    if gamma_offset is not None:
        terms.gamma_offset = gamma_offset
    if odd_phase is not None:
        terms.odd_phase = odd_phase
    return terms


@dataclass
class _Mode:
    """How particles are cut out of one tilt: from the unbinned image (RELION's windows of
    round(bin·s) px) or from the tilt Fourier-binned by num/den (windows of ``win`` px)."""

    num: int
    den: int
    win: int
    factor: float  # window px per output px
    crop: FourierCrop  # from the window's spectrum to the output box
    w_shift: int
    chunk: int  # windows made at a time

    @classmethod
    def make(cls, s: int, num: int, den: int, win: int, factor: float, chunk_bytes: int) -> _Mode:
        sh = s // 2 + 1
        rows: NDArray[np.integer]
        if factor != 1.0:
            rows, inv_bin = crop_rows(win, int(win / factor + 0.5)), 1.0 / factor
        else:
            rows, inv_bin = np.arange(s), 1.0
        ncols = min(cropped_width(win, factor), sh)
        per_window = win * win * 4 + win * (win // 2 + 1) * 8
        chunk = max(1, int(chunk_bytes // per_window))
        crop = FourierCrop(rows=rows.astype(np.int64), ncols=ncols, inv_bin=inv_bin)
        return cls(num, den, win, factor, crop, 2 * (ncols - 1), chunk)

    def pays_off(self, particles: int, image_shape: tuple[int, ...], relion: _Mode) -> bool:
        """Binning the whole tilt pays off when it saves more window pixels over this
        tilt's particles than ~3.5 per image pixel.  Measured at --j 2 on 3710x3838 tilts
        with 990 particles each (docs/benchmarks.md): bin 2, box 256 binned 60.5 s, not
        64.9 s; box 128 binned 21.3 s, not 17.9 s; the break-even fitted to both is 3.8
        (it was 1.3 before the window cut-out became 2x faster)."""
        saved = particles * (relion.win**2 - self.win**2)
        return saved > 3.5 * (image_shape[0] + relion.win) * (image_shape[1] + relion.win)


@dataclass(frozen=True, kw_only=True)
class _Series:
    """What every window of one tilt series shares (n particles)."""

    ts: TiltSeriesLike
    geo: ParticleGeometry
    group: Int64Array  # (n,) 0-based optics group
    terms: TiltSeriesTerms
    st: Settings


@dataclass(frozen=True, kw_only=True)
class _Loaded:
    """A tilt image as read and binned for its windows."""

    idx: NDArray[np.intp]  # (k,) the particles visible in it
    mode: _Mode
    source: Float32Array  # the tilt image, binned by mode.num/mode.den
    centres: WindowCentres  # (k,) in pixels of ``source``, in the order of ``idx``
    noise: Float32Array  # the whitening filter, or (0, 1)


@dataclass(frozen=True, kw_only=True)
class _Tilt:
    """One tilt's source image and per-tilt terms, shared by all its windows."""

    series: _Series
    f: int
    mode: _Mode
    source: Float32Array  # the tilt image, binned by mode.num/mode.den
    centres: WindowCentres  # of the tilt's visible particles (:class:`_Loaded`)
    ctf: TiltCtfTerms
    k1: float  # π·λ: beta = k1·Δz
    filters: TiltFilters


def _window_centres(c2u: Float64Array, scale: float) -> WindowCentres:
    """Window centres in pixels of an image binned by ``scale`` from padded unbinned
    ones ``c2u`` (n, 2), with the crop circle where RELION's unbinned window puts it."""
    c2 = c2u / scale
    mdx = c_round(c2u[:, 0]) / scale - c_round(c2[:, 0])
    mdy = c_round(c2u[:, 1]) / scale - c_round(c2[:, 1])
    return WindowCentres(x=c2[:, 0], y=c2[:, 1], circle_dx=mdx, circle_dy=mdy)


def _prepare_chunk(t: _Tilt, part: NDArray[np.intp], pos: slice, out: Float32Array,
                   workers: int) -> None:  # fmt: skip
    """Cut out, transform and weight the windows of particles ``part`` (k,), at
    positions ``pos`` of the tilt's visible particles, into ``out`` (k, s+1, s//2+2, LANES)."""
    ts, geo, st = t.series.ts, t.series.geo, t.series.st
    m, f = t.mode, t.f
    s, win = st.box, m.win
    scale = m.num / m.den  # unbinned pixels per source pixel: c -> (c + pad) / scale
    centres = t.centres.take(pos)
    cx, cy = centres.x, centres.y  # in pixels of ``source``
    windows = np.empty((part.size, win, win), np.float32)
    extract_windows(
        t.source, centres, out=windows, circle_crop=st.circle_crop, falloff=EDGE_FALLOFF / scale
    )
    # unitary 2D transform, the column pass only for the columns the crop keeps
    F: Complex64Array = sfft.rfft(windows, axis=2, norm="ortho", workers=workers)
    F = F[:, :, : m.crop.ncols]
    del windows
    F = sfft.fft(F, axis=1, norm="ortho", workers=workers, overwrite_x=True)
    # sub-pixel shift: projected centre relative to the binned window's centre, in output
    # px (RELION: the nominal bin)
    ox = c_round(cx) - win // 2
    oy = c_round(cy) - win // 2
    to_binned = 1.0 / m.factor
    # RELION converts the offset from its window's corner with the nominal bin, though its
    # window (round(bin·s) px) is cropped to s: each particle lands (s02D//2)/bin - s/2
    # output px off the centre (-0.087 px at bin 2.3, box 28).  A binned window puts it
    # (win//2)/factor - s/2 off, 0: add the difference, or the map is shifted.
    lag = (st.window // 2) / st.binning - (win // 2) * to_binned
    tx = (cx - ox) * to_binned - m.w_shift // 2 + lag
    ty = (cy - oy) * to_binned - s // 2 + lag
    dz = ts.hand * ts.defocus_slope * ts.pixel_size * geo.depth[part, f]
    ex, ey = shift_factors(s, m.w_shift, tx, ty)
    slices = SliceTerms(ex=ex, ey=ey, beta=t.k1 * dz, group=t.series.group[part])
    finish_slices(
        F, crop=m.crop, slices=slices, ctf=t.ctf, filters=t.filters, do_ctf=st.do_ctf,
        sign=-1.0, out=out,
    )  # fmt: skip


def backproject(
    ts: TiltSeriesLike,
    read_frame: Callable[[int], NDArray[Any]],
    geo: ParticleGeometry,
    half: NDArray[np.integer],
    terms: TiltSeriesTerms,
    st: Settings,
    acc: Accumulators,
    scale_ratio: float,
    optics_group: NDArray[np.integer] | None = None,
) -> Iterator[int]:
    """Insert every visible particle-tilt of one tilt series; yields particle-tilts done.

    ``half`` (n,) is 0 or 1 per particle; ``scale_ratio`` is px0/px_t (the first
    tomogram's pixel size over this one's); ``optics_group`` (n,) 0-based picks the
    Zernike maps in ``terms``; ``read_frame(f)`` returns tilt image f (H, W).

    ``st.exact``: RELION's path, a round(bin·s) px window per particle-tilt, FFT'd and
    Fourier-cropped to s.  Otherwise each tilt is first Fourier-binned to 1.5 times
    the output sampling and the windows (1.5·s px) are cut from that (see
    :func:`~.extraction.fast_window`): nearly the same maps at (bin/1.5)² less work per
    particle-tilt for bin > 1.5.

    With ``st.threads`` > 1 the windows are made by a pool of that many threads, whole
    chunks per thread, each running the kernels on one core: no fork-join per kernel
    call, and no 4:3 split of a 7-window chunk over 2 threads (the kernels scaled only
    ~1.7x).  Every window is made the same way whichever thread makes it.  The next
    tilt is then also read and binned in the background while this one's windows are
    made and inserted (one more tilt image in memory).
    """
    s = st.box
    sh = s // 2 + 1
    n = geo.n
    group = np.zeros(n, np.int64) if optics_group is None else np.asarray(optics_group, np.int64)
    half64 = np.asarray(half, np.int64)
    relion_mode = _Mode.make(s, 1, 1, st.window, st.binning, st.chunk_bytes)
    fast_mode = None
    # Without the circular mask the window's square edge is part of the data, and a
    # binned tilt cannot put it where RELION's unbinned window has it (FSC 0.98 against
    # --exact at bin 2 on simulated data): such jobs cut RELION's windows.
    if not st.exact and st.circle_crop:
        num, den, win = fast_window(s, st.binning)
        if num != den:
            fast_mode = _Mode.make(s, num, den, win, win / s, st.chunk_bytes)
    binned_px = ts.pixel_size * st.binning
    noise_empty = np.zeros((0, 1), np.float32)
    odd: Complex128Array = (
        np.exp(-1j * terms.odd_phase) if len(terms.odd_phase) else np.zeros((0, 1, 1), complex)
    )
    series = _Series(ts=ts, geo=geo, group=group, terms=terms, st=st)
    ins = st.insertion_batch()
    pool: ThreadPoolExecutor | None = None
    if st.threads > 1:
        # Numba's thread count is per calling thread: the pool's threads run kernels serially
        pool = ThreadPoolExecutor(
            st.threads, "windows", initializer=numba.set_num_threads, initargs=(1,)
        )

    bin_work = BinWork()

    def load(f: int) -> _Loaded | None:
        """Tilt f read, binned (and its whitening filter): the per-tilt work that does
        not depend on the batches."""
        idx = np.flatnonzero(geo.visible[:, f])
        if idx.size == 0:
            return None
        img = read_frame(f)
        m = relion_mode
        if fast_mode is not None and (
            st.prebin == "always"
            or (st.prebin == "auto" and fast_mode.pays_off(idx.size, img.shape, relion_mode))
        ):
            m = fast_mode
        # tilt f's image is in use while f + 1 is binned: two output slots
        source, pad = bin_image(img, m.num, m.den, st.window // 2 + 2, bin_work, f % 2)
        noise = whitening_filter(img, s, st.binning) if st.whiten else noise_empty
        c = _window_centres(geo.centres2d[idx, f] + pad, m.num / m.den)
        if m.num != m.den:
            # windows with the same circle offset next to each other: the cut-out keeps
            # the mask's edge factors while the offset stays (a few distinct offsets)
            o = np.lexsort((c.circle_dy, c.circle_dx))
            idx, c = idx[o], c.take(o)
        return _Loaded(idx=idx, mode=m, source=source, centres=c, noise=noise)

    # with threads, tilt f+1 is loaded while tilt f's batches run: the binning's FFTs
    # fill the cores' idle time between batches (at bin 2, box 256, 8% of the job ran on
    # the main thread alone)
    loader = ThreadPoolExecutor(1, thread_name_prefix="load") if pool is not None else None
    # one batch's slices, reused by every batch: a new array each time (58 MB at box 192,
    # 0.4 GB at box 512; above malloc's reuse threshold) was mapped anew and page-faulted
    # in by the windows' threads, slow on VMs
    buffer: Float32Array | None = None
    try:
        ahead = loader.submit(load, 0) if loader is not None and ts.frame_count else None
        for f in range(ts.frame_count):
            loaded = ahead.result() if ahead is not None else load(f)
            if loader is not None and f + 1 < ts.frame_count:
                ahead = loader.submit(load, f + 1)
            if loaded is None:
                continue
            idx, m = loaded.idx, loaded.mode
            const = ctf_constants(
                ts.voltage, ts.cs, ts.q0, ts.ctf_bfactor[f], ts.ctf_scale[f], ts.phase_shift[f]
            )
            ctf = tilt_ctf_terms(
                s, binned_px, ts.defocus_u[f], ts.defocus_v[f], ts.defocus_angle[f], const,
                terms.gamma_offset,
            )  # fmt: skip
            filters = TiltFilters(
                dose=terms.dose[f], x_ranges=terms.x_ranges[f], odd=odd, noise=loaded.noise
            )
            tilt = _Tilt(
                series=series,
                f=f,
                mode=m,
                source=loaded.source,
                centres=loaded.centres,
                ctf=ctf,
                k1=const.k1,
                filters=filters,
            )
            P3 = terms.P[f, :3, :3]
            for start in range(0, idx.size, ins):
                sel = idx[start : start + ins]
                nb = sel.size
                if buffer is None:
                    buffer = np.empty((min(ins, n), s + 1, sh + 1, LANES), np.float32)
                packed = buffer[:nb]
                # (the particles, their positions in the tilt's, their slices): the last
                # chunk of a batch is cut at the batch's end, not at the chunk size
                ends = [(c, min(c + m.chunk, nb)) for c in range(0, nb, m.chunk)]
                chunks = [(sel[c:e], slice(start + c, start + e), packed[c:e]) for c, e in ends]
                if pool is None:
                    for part, pos, out in chunks:
                        _prepare_chunk(tilt, part, pos, out, st.threads)
                else:
                    jobs = [pool.submit(_prepare_chunk, tilt, *chunk, 1) for chunk in chunks]
                    for job in jobs:
                        job.result()
                B = scale_ratio * (P3[None] @ geo.rotation[sel])
                Q = slice_matrices(B)
                max_freq = np.full(nb, terms.x_ranges[f, 0], np.int64)
                batch = SliceBatch(packed=packed, Q=Q, max_freq=max_freq, half=half64[sel])
                insert_slices(batch, acc, single=not st.exact, threads=st.threads)
                del packed, chunks, batch
                yield nb
    finally:
        if loader is not None:  # a load still running finishes before its reader closes
            loader.shutdown(cancel_futures=True)
        if pool is not None:
            pool.shutdown(cancel_futures=True)
