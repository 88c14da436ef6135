"""Numba kernels: the formulas (CPU rows, blocks, one score per row) and the GPU kernels."""
