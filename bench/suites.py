"""The benchmark suites: declarative lists of convolution cases.

A case says what to convolve, not how: op, input shape, weight shape, stride, padding, dilation,
groups, padding_mode, bias, and (TextCNN) whether the input is a transposed, non-contiguous view.
Each suite is built for a device ("cpu" or "gpu") and a size ("quick" or full): the GPU gets the
real batch sizes, the CPU small batches so a full CPU run takes minutes and ``--quick`` seconds.

Suites:
  resnet50   the 20 distinct forward conv shapes of ResNet-50 at 224x224 (the original v1 layout:
             stride 2 on the first 1x1 of stages 2-4 and on the downsample projections)
  sweep      stride {1,2} x padding {0,1,'same'} x dilation {1,2} for conv1d and conv2d
             ('same' only with stride 1), plus one reflect-padded case
  grouped    MobileNet-style depthwise 3x3 and ResNeXt-style grouped 3x3 (32 groups)
  textcnn    conv1d over an embedding (batch, length, dim) transposed to (batch, dim, length),
             kernels 3/4/5 with 100 filters
  wavenet    dilated conv1d, kernel 2, dilation 1..512, padding = dilation ("causal-like": a causal
             layer keeps the first L outputs)
  longkernel conv1d with kernels 63 and 127, padding 'same'
  audio      strided audio conv1d: wav2vec 2.0's first layer (1 -> 512, kernel 10, stride 5) and a
             512 -> 512 kernel 3 stride 2 layer
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Case:
    """One convolution to verify and time. Shapes are PyTorch's: x (N, C, [H,] W), w (K, C/g, [R,] S).

    ``transposed_input``: the input is built as (N, W, C) and handed over as its (N, C, W)
    transposed view (non-contiguous), as a TextCNN does with an embedding.
    """

    suite: str
    name: str
    op: str
    x_shape: tuple
    w_shape: tuple
    stride: int | tuple = 1
    padding: int | tuple | str = 0
    dilation: int | tuple = 1
    groups: int = 1
    padding_mode: str = "zeros"
    bias: bool = False
    transposed_input: bool = False
    tags: tuple = field(default=())

    @property
    def kwargs(self) -> dict:
        """Keyword arguments of conv.conv1d/conv2d (and of torch's, but for padding_mode)."""
        return {"stride": self.stride, "padding": self.padding, "dilation": self.dilation,
                "groups": self.groups, "padding_mode": self.padding_mode}

    @property
    def label(self) -> str:
        return f"{self.suite}/{self.name}"

    def describe(self) -> str:
        """Short human description: shapes and the non-default arguments."""
        parts = ["x" + "x".join(map(str, self.x_shape)), "w" + "x".join(map(str, self.w_shape))]
        for key, default in (("stride", 1), ("padding", 0), ("dilation", 1), ("groups", 1),
                             ("padding_mode", "zeros")):
            value = getattr(self, key)
            if value != default:
                parts.append(f"{key}={value}")
        if self.transposed_input:
            parts.append("transposed-view")
        return " ".join(parts)


# ------------------------------------------------------------------------------------------ ResNet-50
# (name, C_in, K, kernel, stride, H_in): the 20 distinct conv shapes of ResNet-50 v1 at 224x224.
_RESNET50 = [
    ("conv1", 3, 64, 7, 2, 224),
    ("s1_1x1_64_64", 64, 64, 1, 1, 56),
    ("s1_3x3_64", 64, 64, 3, 1, 56),
    ("s1_1x1_64_256", 64, 256, 1, 1, 56),          # also the stage-1 downsample projection
    ("s1_1x1_256_64", 256, 64, 1, 1, 56),
    ("s2_1x1_256_128_s2", 256, 128, 1, 2, 56),
    ("s2_3x3_128", 128, 128, 3, 1, 28),
    ("s2_1x1_128_512", 128, 512, 1, 1, 28),
    ("s2_down_256_512_s2", 256, 512, 1, 2, 56),
    ("s2_1x1_512_128", 512, 128, 1, 1, 28),
    ("s3_1x1_512_256_s2", 512, 256, 1, 2, 28),
    ("s3_3x3_256", 256, 256, 3, 1, 14),
    ("s3_1x1_256_1024", 256, 1024, 1, 1, 14),
    ("s3_down_512_1024_s2", 512, 1024, 1, 2, 28),
    ("s3_1x1_1024_256", 1024, 256, 1, 1, 14),
    ("s4_1x1_1024_512_s2", 1024, 512, 1, 2, 14),
    ("s4_3x3_512", 512, 512, 3, 1, 7),
    ("s4_1x1_512_2048", 512, 2048, 1, 1, 7),
    ("s4_down_1024_2048_s2", 1024, 2048, 1, 2, 14),
    ("s4_1x1_2048_512", 2048, 512, 1, 1, 7),
]
# The --quick subset: the stem, a 3x3 per early stage, a strided projection, a wide 1x1.
_RESNET50_QUICK = ("conv1", "s1_3x3_64", "s2_3x3_128", "s3_down_512_1024_s2", "s4_1x1_2048_512")


def resnet50(device: str, quick: bool) -> list[Case]:
    batch = 32 if device == "gpu" else 1
    cases = []
    for name, c, k, kern, stride, h in _RESNET50:
        if quick and name not in _RESNET50_QUICK:
            continue
        cases.append(Case("resnet50", name, "conv2d", (batch, c, h, h), (k, c, kern, kern),
                          stride=stride, padding=kern // 2))
    return cases


# ---------------------------------------------------------------------- stride x padding x dilation
def sweep(device: str, quick: bool) -> list[Case]:
    if device == "gpu":
        x2, c2, x1, c1 = (32, 64, 56, 56), 64, (32, 128, 4096), 128
    elif quick:
        x2, c2, x1, c1 = (1, 16, 32, 32), 16, (1, 32, 1024), 32
    else:
        x2, c2, x1, c1 = (2, 32, 56, 56), 32, (2, 64, 2048), 64
    cases = []
    for op, x, w in (("conv1d", x1, (c1, c1, 3)), ("conv2d", x2, (c2, c2, 3, 3))):
        for stride in (1, 2):
            for padding in (0, 1, "same"):
                if padding == "same" and stride != 1:
                    continue                # PyTorch rejects 'same' with stride > 1
                for dilation in (1, 2):
                    name = f"{op}_s{stride}_p{padding}_d{dilation}"
                    cases.append(Case("sweep", name, op, x, w, stride=stride, padding=padding,
                                      dilation=dilation, bias=True))
    cases.append(Case("sweep", "conv2d_s1_p1_d1_reflect", "conv2d", x2, (c2, c2, 3, 3), padding=1,
                      padding_mode="reflect", bias=True))
    return cases


# --------------------------------------------------------------------------- depthwise and grouped
def grouped(device: str, quick: bool) -> list[Case]:
    n = 32 if device == "gpu" else 1
    # (name, C, H, stride, groups): depthwise has groups = C (MobileNet V2 shapes), ResNeXt 32x4d.
    table = [
        ("mbv2_dw3x3_32_112", 32, 112, 1, 32),
        ("mbv2_dw3x3_144_56_s2", 144, 56, 2, 144),
        ("mbv2_dw3x3_384_14", 384, 14, 1, 384),
        ("resnext_g32_3x3_128_56", 128, 56, 1, 32),
        ("resnext_g32_3x3_256_28_s2", 256, 56, 2, 32),
        ("resnext_g32_3x3_1024_14", 1024, 14, 1, 32),
    ]
    if quick:
        table = [table[0], table[1], table[3]]
    return [Case("grouped", name, "conv2d", (n, c, h, h), (c, c // g, 3, 3), stride=stride,
                 padding=1, groups=g) for name, c, h, stride, g in table]


# ------------------------------------------------------------------------------------------ TextCNN
def textcnn(device: str, quick: bool) -> list[Case]:
    batch, length, dim = (64, 256, 300) if device == "gpu" else ((4, 64, 300) if quick
                                                                 else (16, 128, 300))
    return [Case("textcnn", f"k{k}_f100", "conv1d", (batch, dim, length), (100, dim, k), bias=True,
                 transposed_input=True) for k in (3, 4, 5)]


# ------------------------------------------------------------------------------------------ WaveNet
def wavenet(device: str, quick: bool) -> list[Case]:
    n, c, length = (16, 64, 16000) if device == "gpu" else ((1, 32, 2048) if quick
                                                           else (1, 32, 8000))
    dilations = (1, 16, 512) if quick else tuple(2 ** i for i in range(10))
    return [Case("wavenet", f"d{d}", "conv1d", (n, c, length), (c, c, 2), padding=d, dilation=d,
                 bias=True) for d in dilations]


# --------------------------------------------------------------------------------------- long kernel
def longkernel(device: str, quick: bool) -> list[Case]:
    n, c, length = (16, 64, 16000) if device == "gpu" else ((1, 8, 2048) if quick else (1, 16, 8000))
    kernels = (63,) if quick else (63, 127)
    return [Case("longkernel", f"k{k}", "conv1d", (n, c, length), (c, c, k), padding="same",
                 bias=True) for k in kernels]


# ------------------------------------------------------------------------------------------- audio
def audio(device: str, quick: bool) -> list[Case]:
    n, samples = (8, 160000) if device == "gpu" else ((1, 8000) if quick else (1, 16000))
    cases = [Case("audio", "wav2vec_l0_1to512_k10_s5", "conv1d", (n, 1, samples), (512, 1, 10),
                  stride=5)]
    if not quick:
        frames = (samples - 10) // 5 + 1
        if device == "cpu":
            frames = min(frames, 1600)
        cases.append(Case("audio", "wav2vec_l1_512_k3_s2", "conv1d", (n, 512, frames),
                          (512, 512, 3), stride=2))
    return cases


SUITES = {
    "resnet50": resnet50,
    "sweep": sweep,
    "grouped": grouped,
    "textcnn": textcnn,
    "wavenet": wavenet,
    "longkernel": longkernel,
    "audio": audio,
}


def build(names, device: str, quick: bool) -> list[Case]:
    """The cases of the named suites (all when `names` is empty), in suite order."""
    names = list(names) or list(SUITES)
    unknown = [n for n in names if n not in SUITES]
    if unknown:
        raise ValueError(f"unknown suite(s) {unknown}; expected some of {list(SUITES)}")
    return [case for name in names for case in SUITES[name](device, quick)]
