# The project with PyTorch inside, so the default run compares our kernels with PyTorch (cuDNN on
# a GPU, oneDNN on the CPU). The default command runs the benchmark runner: on a GPU it benchmarks
# the CUDA kernels against cuDNN; without a GPU (no --gpus flag) it falls back to the CPU run.
#   docker build -t conv .
#   docker run --gpus all conv                               # GPU
#   docker run conv                                          # CPU
#   docker run --read-only --tmpfs /tmp --gpus all conv      # a read-only root filesystem
#
# CUDA libraries once: the base is a plain Python image (no CUDA toolkit); the CUDA user-space
# libraries come from the pip wheels PyTorch depends on (nvidia-*-cu12), which CuPy (the [cuda12]
# extra) and numba-cuda ([cu12]) load too; the driver comes from the host (--gpus). Pick the CUDA
# major version of the PyTorch wheel: CUDA_EXTRA=cuda12 (default) or cuda (CUDA 13).
# Not built in this project's CI (no Docker daemon there): docker build is the check.
FROM python:3.11-slim

ARG CUDA_EXTRA=cuda12
ARG TORCH_SPEC="torch==2.13.0"
ENV PIP_NO_CACHE_DIR=1 PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1

WORKDIR /opt/conv
COPY pyproject.toml README.md LICENSE ./
COPY conv ./conv
COPY kernels ./kernels
COPY bench ./bench
COPY tests ./tests
# bench: tqdm + matplotlib + threadpoolctl; test: NVRTC + pytest so the image can check itself.
RUN pip install "${TORCH_SPEC}" ".[${CUDA_EXTRA},bench,test]" \
    && python -c "import conv; conv.conv2d" \
    && useradd --create-home --uid 1000 conv

# Everything written at run time goes under /tmp (a tmpfs with --read-only): numba's kernel cache
# (conv falls back to a temporary folder by itself when nothing else is writable), CuPy's kernel
# cache, matplotlib's config, conv's autotune cache and the benchmark runner's evidence files
# (./bench-results/ of the working directory).
ENV HOME=/tmp CUPY_CACHE_DIR=/tmp/cupy-kernels MPLCONFIGDIR=/tmp/matplotlib \
    CONV_CACHE_DIR=/tmp/conv-cache NUMBA_CACHE_DIR=/tmp/numba-cache
USER conv
WORKDIR /tmp
CMD ["conv-bench", "--device", "auto"]
