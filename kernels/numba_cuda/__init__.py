"""numba.cuda kernels: common.py (padding, accumulation), direct.py, im2col.py, gemm.py, copy.py."""
