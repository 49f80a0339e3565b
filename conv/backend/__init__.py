"""The backends, one package each: reference (the NumPy oracle), cpu (numba/LLVM and BLAS),
cupy (CUDA C kernels from kernels/cuda/), numba_cuda (numba.cuda kernels from kernels/numba_cuda/).
conv/registry.py lists them and their algorithms; conv/plan.py says what a backend module defines."""
