"""Array handling: views of every layout read correctly, inputs are never modified, empty shapes."""
import numpy as np
import pytest

import conv
from tests._helpers import HOST_ALGORITHMS as ALGOS
from tests._helpers import assert_matches_reference, make_operands


@pytest.mark.parametrize("backend,algorithm", ALGOS)
def test_textcnn_transposed_embedding(backend, algorithm, rng):
    # (batch, length, dim) embedding transposed to (batch, dim, length): a non-contiguous view.
    emb, w, _ = make_operands(rng, (3, 20, 8), (5, 8, 3), "float32")
    x = emb.transpose(0, 2, 1)
    assert not x.flags.c_contiguous
    assert_matches_reference("conv1d", x, w, None, backend=backend, algorithm=algorithm)


@pytest.mark.parametrize("backend,algorithm", ALGOS)
@pytest.mark.parametrize("view", ["negative-stride", "sliced", "fortran", "channels-last",
                                  "broadcast-weight"])
def test_strided_views(view, backend, algorithm, rng):
    base, w, _ = make_operands(rng, (2, 4, 9, 12), (6, 2, 3, 3), "float64")
    if view == "negative-stride":
        x = base[:, ::-1, :, ::-1]
    elif view == "sliced":
        x = base[:, :, 1:8:2, ::3]
    elif view == "fortran":
        x = np.asfortranarray(base)
    elif view == "channels-last":
        x = np.ascontiguousarray(base.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
    else:
        x = base
        _, w1, _ = make_operands(rng, None, (1, 2, 3, 3), "float64")
        w = np.broadcast_to(w1, (6, 2, 3, 3))
    assert_matches_reference("conv2d", x, w, None, backend=backend, algorithm=algorithm, groups=2,
                             padding=1, padding_mode="reflect")


@pytest.mark.parametrize("backend,algorithm", ALGOS)
@pytest.mark.parametrize("mode", ["zeros", "reflect", "replicate", "circular"])
def test_inputs_never_modified(mode, backend, algorithm, rng):
    x, w, b = make_operands(rng, (2, 4, 7, 8), (4, 2, 3, 3), "float32", bias=True)
    copies = [v.copy() for v in (x, w, b)]
    out = conv.conv2d(x, w, b, padding=2, groups=2, padding_mode=mode, backend=backend,
                      algorithm=algorithm)
    for v, c in zip((x, w, b), copies):
        np.testing.assert_array_equal(v, c)
    assert not np.shares_memory(out, x) and not np.shares_memory(out, w)


def test_read_only_inputs(rng):
    x, w, _ = make_operands(rng, (1, 2, 5, 5), (3, 2, 3, 3), "float32")
    x.flags.writeable = False
    w.flags.writeable = False
    assert_matches_reference("conv2d", x, w, None, backend="cpu", padding=1)


@pytest.mark.parametrize("op,xs,ws,expected", [
    ("conv2d", (0, 3, 5, 5), (4, 3, 3, 3), (0, 4, 3, 3)),
    ("conv2d", (2, 0, 5, 5), (4, 0, 3, 3), (2, 0, 3, 3)),     # PyTorch: zero channels stay zero
    ("conv2d", (0, 5, 5), (4, 0, 3, 3), (0, 3, 3)),
    ("conv1d", (0, 3, 5), (4, 3, 3), (0, 4, 3)),
    ("conv1d", (0, 5), (3, 0, 1), (0, 5)),
])
def test_empty_shapes_like_pytorch(op, xs, ws, expected, rng):
    x, w, b = make_operands(rng, xs, ws, "float32", bias=True)
    for backend in ("cpu", "reference"):
        out = getattr(conv, op)(x, w, b, backend=backend)
        assert out.shape == expected and out.dtype == np.float32


def test_output_dtype_and_kind_follow_input(rng):
    for dtype in ("float16", "float32", "float64", "complex64", "complex128", "int64"):
        x, w, _ = make_operands(rng, (1, 2, 6), (3, 2, 3), dtype)
        out = conv.conv1d(x, w)
        assert isinstance(out, np.ndarray) and out.dtype == np.dtype(dtype)


def test_backends_report():
    report = conv.backends()
    assert set(report) == {"reference", "cpu", "cupy", "numba"}
    for name, (ok, why) in report.items():
        assert isinstance(ok, bool) and why, name
    assert report["cpu"][0] and report["reference"][0]


def test_explain_names_backend_algorithm_and_reason(rng):
    x, w_dw, _ = make_operands(rng, (1, 8, 9, 9), (8, 1, 3, 3), "float32")
    _, w_dense, _ = make_operands(rng, None, (16, 8, 3, 3), "float32")
    dw = conv.explain("conv2d", x, w_dw, groups=8)
    assert isinstance(dw, conv.Plan)
    # The CPU's choice comes from its dispatch table: the nearest measured case is a MobileNet
    # depthwise layer, where the direct kernel was fastest.
    assert (dw.backend, dw.algorithm) == ("cpu", "direct")
    assert "dispatch table" in dw.reason and "grouped/mbv2_dw3x3_" in dw.reason, dw.reason
    dense = conv.explain("conv2d", x, w_dense)
    assert (dense.backend, dense.algorithm) == ("cpu", "implicit")
    forced = conv.explain("conv2d", x, w_dense, backend="reference")
    assert forced.backend == "reference" and "asked for" in forced.reason
    with pytest.raises(ValueError, match="op must be"):
        conv.explain("conv3d", x, x)


def test_gpu_backend_refuses_clearly_without_gpu(rng):
    x, w, _ = make_operands(rng, (1, 2, 6), (3, 2, 3), "float32")
    ok, why = conv.backends()["cupy"]
    if ok:
        pytest.skip("a GPU is usable here")
    with pytest.raises(RuntimeError, match="backend 'cupy' is not usable here"):
        conv.conv1d(x, w, backend="cupy")


def test_kernels_digest_known_answer(tmp_path):
    # The digest's definition (DEVELOPERS.md), spelled out on a folder built here: files sorted by
    # POSIX path relative to the folder, each hashed as its path, a NUL byte, then its bytes;
    # __pycache__ left out.
    import hashlib
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.py").write_bytes(b"second")
    (tmp_path / "a.cu").write_bytes(b"first\n")
    (tmp_path / "__pycache__").mkdir()
    (tmp_path / "__pycache__" / "a.pyc").write_bytes(b"ignored")
    expected = hashlib.sha256(b"a.cu\0first\n" + b"sub/b.py\0second").hexdigest()
    assert conv.kernels_digest(tmp_path) == expected
    (tmp_path / "sub" / "b.py").write_bytes(b"secone")             # one byte changed
    assert conv.kernels_digest(tmp_path) != expected


def test_kernels_digest_covers_the_installed_kernels():
    from conv._digest import kernels_root
    root = kernels_root()
    assert (root / "cuda" / "common.cuh").is_file() and (root / "numba_cuda").is_dir()
    assert conv.kernels_digest() == conv.kernels_digest(root)
    assert len(conv.kernels_digest()) == 64


class _PointerOnly:
    """A CUDA array that carries only a pointer (__cuda_array_interface__, no device index)."""

    def __init__(self, shape, typestr="<f4"):
        self.__cuda_array_interface__ = {"shape": shape, "typestr": typestr, "data": (0, False),
                                         "version": 3}


class _OnDevice(_PointerOnly):
    """A CUDA array that names its device through DLPack (kDLCUDA = 2)."""

    def __init__(self, shape, device):
        super().__init__(shape)
        self._device = device

    def __dlpack_device__(self):
        return (2, self._device)


def test_same_device_rule_like_pytorch():
    from conv.plan import check_same_device
    x = np.ones((1, 2, 5), np.float32)
    assert check_same_device(x, x, None) == "cpu"
    assert check_same_device(_OnDevice((1,), 0), _PointerOnly((1,))) == "cuda:0"
    with pytest.raises(ValueError) as info:
        check_same_device(_OnDevice((1,), 0), x)
    assert str(info.value) == ("Expected all tensors to be on the same device, but found at least "
                               "two devices, cuda:0 and cpu!")
    with pytest.raises(ValueError, match="cuda:0 and cuda:1"):
        check_same_device(_OnDevice((1,), 0), _OnDevice((1,), 1))
    with pytest.raises(ValueError, match="cuda and cpu"):
        check_same_device(_PointerOnly((1,)), x)


def test_torch_tensors_export_truthfully():
    from tests.conftest import torch_or_skip
    torch = torch_or_skip()
    from conv._gpu_arrays import _plain_torch
    w = torch.ones(3, requires_grad=True)
    assert not _plain_torch(w).requires_grad
    z = torch.complex(torch.ones(2), torch.arange(2.0)).conj()
    assert z.is_conj()
    plain = _plain_torch(z)
    assert not plain.is_conj() and plain.imag.tolist() == [-0.0, -1.0]
