"""Numerics: geometry, CTF, dose, extraction, insertion, symmetry, finalisation.

Pure NumPy/SciPy/Numba: no Qt, no napari, no file formats.
"""
