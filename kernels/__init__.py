"""GPU kernel sources of the `conv` package (installed as `conv_kernels`).

CUDA C sources (*.cu, *.cuh) are compiled at run time by CuPy (conv/_cupy_backend.py) and checked
by NVRTC in CI; numba.cuda kernels (*.py) are imported by conv/_numba_backend.py.
"""
