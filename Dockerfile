# CUDA runtime image with the project and its GPU extras. The default command runs the benchmark
# runner: on a GPU it benchmarks the CUDA kernels against PyTorch when present; on a machine
# without a GPU (no --gpus flag) it falls back to the CPU run.
#   docker build -t conv .
#   docker run --gpus all conv            # GPU
#   docker run conv                       # CPU fallback
FROM nvidia/cuda:13.0.1-runtime-ubuntu24.04

ENV DEBIAN_FRONTEND=noninteractive PIP_NO_CACHE_DIR=1 PYTHONUNBUFFERED=1
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv python3-pip git \
    && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /opt/conv
COPY pyproject.toml README.md LICENSE ./
COPY conv ./conv
COPY kernels ./kernels
COPY bench ./bench
COPY tests ./tests
# cuda: CuPy + numba-cuda; bench: tqdm + matplotlib; test: NVRTC + pytest so the image can self-check.
RUN pip install ".[cuda,bench,test]"

CMD ["conv-bench", "--device", "auto"]
