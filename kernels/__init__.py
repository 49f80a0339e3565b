"""GPU kernel sources of the `conv` package, installed as `conv.kernels`:
  cuda/         CUDA C (*.cu, *.cuh), compiled at run time by CuPy (conv/backend/cupy/) and
                checked by NVRTC in CI;
  numba_cuda/   numba.cuda kernels (*.py), imported by conv/backend/numba_cuda/.
The kernel digest (conv.kernels_digest()) hashes every file under this folder.
"""
