"""The CuPy backend on a real GPU: the shared grid for every algorithm and dtype, array kinds and
views, errors, workspace chunking, a property test, modules. Skipped with a reason without a GPU.

Every run has output poisoning on (NaN / a sentinel written before the kernels), so an output
element no thread wrote fails the comparison.
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import conv
from conv import _cupy_backend, _gpu_arrays
from conv._dispatch import backend_availability
from tests._cases import CASE_IDS, CASES
from tests._helpers import (FLOAT_AND_COMPLEX, assert_matches_reference, random_array,
                            refused_by_pytorch)

_OK, _WHY = backend_availability("cupy")
pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not _OK, reason=f"CuPy backend not usable: {_WHY}"),
    pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel lengths"),
]

DTYPES = FLOAT_AND_COMPLEX + ["int32"]


@pytest.fixture
def cupy():
    return _gpu_arrays.import_cupy()


@pytest.fixture(autouse=True)
def poison_outputs():
    _gpu_arrays.set_poison_outputs(True)
    yield
    _gpu_arrays.set_poison_outputs(False)


@pytest.fixture
def workspace():
    """Lets a test set the im2col workspace limit; restores the default afterwards."""
    yield _cupy_backend.set_workspace_limit
    _cupy_backend.set_workspace_limit(None)


def _host_operands(case, dtype, seed=0):
    op, x_shape, w_shape, has_bias, kwargs = case
    rng = np.random.default_rng(seed)
    x = random_array(rng, x_shape, dtype)
    w = random_array(rng, w_shape, dtype)
    b = random_array(rng, (w_shape[0],), dtype) if has_bias else None
    return op, x, w, b, kwargs


def _to_device(cupy, *arrays):
    return tuple(None if a is None else cupy.asarray(a) for a in arrays)


# --- the shared grid ------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("algorithm", _cupy_backend.ALGORITHMS)
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_grid(cupy, case, algorithm, dtype):
    op, x, w, b, kwargs = _host_operands(case, dtype)
    xd, wd, bd = _to_device(cupy, x, w, b)
    if refused_by_pytorch(dtype, kwargs):
        with pytest.raises(TypeError, match="slow_conv_dilated"):
            getattr(conv, op)(xd, wd, bd, backend="cupy", algorithm=algorithm, **kwargs)
        return
    assert_matches_reference(op, xd, wd, bd, backend="cupy", algorithm=algorithm,
                             x_host=x, w_host=w, b_host=b, **kwargs)
    # Inputs are never modified.
    np.testing.assert_array_equal(xd.get(), x)
    np.testing.assert_array_equal(wd.get(), w)
    if b is not None:
        np.testing.assert_array_equal(bd.get(), b)


@pytest.mark.parametrize("dtype", ["int8", "int16", "int64", "uint8"])
@pytest.mark.parametrize("algorithm", ["direct", "im2col"])
def test_other_integer_dtypes(cupy, algorithm, dtype):
    op, x, w, b, kwargs = _host_operands(CASES[0], dtype)
    # Large values so int8/uint8 sums wrap, as PyTorch's.
    x = (x * 37).astype(dtype)
    assert_matches_reference(op, *_to_device(cupy, x, w, b), backend="cupy", algorithm=algorithm,
                             x_host=x, w_host=w, b_host=b, **kwargs)


# --- array kinds, devices, views, streams ---------------------------------------------------

def test_cupy_in_cupy_out_on_the_input_device(cupy):
    op, x, w, b, kwargs = _host_operands(CASES[0], "float32")
    xd, wd, bd = _to_device(cupy, x, w, b)
    out = conv.conv2d(xd, wd, bd, **kwargs)
    assert isinstance(out, cupy.ndarray)
    assert out.device.id == xd.device.id
    assert conv.explain("conv2d", xd, wd, bd, **kwargs).backend == "cupy"


def test_numpy_in_numpy_out(cupy):
    op, x, w, b, kwargs = _host_operands(CASES[0], "float64")
    out = assert_matches_reference(op, x, w, b, backend="cupy", **kwargs)
    assert type(out) is np.ndarray


@pytest.mark.parametrize("algorithm", _cupy_backend.ALGORITHMS)
def test_views_negative_strides_and_transposes(cupy, algorithm):
    rng = np.random.default_rng(3)
    base = cupy.asarray(random_array(rng, (4, 6, 11, 13), "float32"))
    x = base[::-1, :, ::2, ::-1]                                   # negative and stepped strides
    w = cupy.asarray(random_array(rng, (6, 3, 3, 4), "float32")).transpose(0, 1, 3, 2)
    b = cupy.asarray(random_array(rng, (12,), "float32"))[::2]
    before = base.get()
    assert_matches_reference("conv2d", x, w, b, backend="cupy", algorithm=algorithm,
                             x_host=x.get(), w_host=w.get(), b_host=b.get(), padding=(1, 2),
                             groups=2, stride=(1, 2), padding_mode="reflect")
    np.testing.assert_array_equal(base.get(), before)


@pytest.mark.parametrize("algorithm", _cupy_backend.ALGORITHMS)
def test_views_pointwise_and_conv1d(cupy, algorithm):
    rng = np.random.default_rng(4)
    x = cupy.asarray(random_array(rng, (3, 6, 9, 7), "float32"))[:, :, ::-1, :]
    w = cupy.asarray(random_array(rng, (8, 6, 1, 1), "float32"))
    assert_matches_reference("conv2d", x, w, None, backend="cupy", algorithm=algorithm,
                             x_host=x.get(), w_host=w.get(), stride=2)
    x1 = cupy.asarray(random_array(rng, (6, 40), "complex64"))[:, ::-2]      # unbatched conv1d
    w1 = cupy.asarray(random_array(rng, (9, 2, 3), "complex64"))
    b1 = cupy.asarray(random_array(rng, (9,), "complex64"))[::-1]
    assert_matches_reference("conv1d", x1, w1, b1, backend="cupy", algorithm=algorithm,
                             x_host=x1.get(), w_host=w1.get(), b_host=b1.get(), groups=3,
                             padding=2, padding_mode="circular", dilation=2)


def test_non_default_stream(cupy):
    op, x, w, b, kwargs = _host_operands(CASES[5], "float32")
    xd, wd, bd = _to_device(cupy, x, w, b)
    cupy.cuda.Device().synchronize()       # the copies above ran on the legacy stream
    stream = cupy.cuda.Stream(non_blocking=True)
    with stream:
        out = conv.conv2d(xd, wd, bd, backend="cupy", **kwargs)
        host = out.get(stream=stream)
    stream.synchronize()
    expected = assert_matches_reference(op, x, w, b, backend="reference", **kwargs)
    np.testing.assert_allclose(host, expected, rtol=1e-4, atol=1e-4)


def test_torch_cuda_in_torch_out(cupy):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("PyTorch has no CUDA device here")
    op, x, w, b, kwargs = _host_operands(CASES[5], "float32")
    xt, wt, bt = (torch.from_numpy(a).cuda() for a in (x, w, b))
    for backend in ("auto", "cupy"):
        out = assert_matches_reference(op, xt, wt, bt, backend=backend, x_host=x, w_host=w,
                                       b_host=b, **kwargs)
        result = conv.conv2d(xt, wt, bt, backend=backend, **kwargs)
        assert isinstance(result, torch.Tensor) and result.is_cuda
        assert result.device == xt.device
        np.testing.assert_array_equal(result.cpu().numpy(), out)
    # nn.Parameter-like weights (requires_grad) and lazily conjugated complex tensors export
    # truthfully: detached, conjugation resolved.
    wt.requires_grad_(True)
    np.testing.assert_array_equal(conv.conv2d(xt, wt, bt, backend="cupy", **kwargs).cpu().numpy(),
                                  out)
    zx = torch.complex(xt, xt.flip(-1)).conj()             # is_conj() is True: a lazy view
    zw = torch.complex(wt.detach(), wt.detach())
    assert zx.is_conj()
    assert_matches_reference(op, zx, zw, None, backend="cupy", x_host=zx.resolve_conj().cpu().numpy(),
                             w_host=zw.cpu().numpy(), **kwargs)


def test_numba_device_array_in_numba_out(cupy):
    numba_cuda = pytest.importorskip("numba.cuda")
    if not numba_cuda.is_available():
        pytest.skip("numba.cuda has no device here")
    op, x, w, b, kwargs = _host_operands(CASES[0], "float64")
    xd, wd, bd = (numba_cuda.to_device(a) for a in (x, w, b))
    result = conv.conv2d(xd, wd, bd, backend="cupy", **kwargs)
    assert numba_cuda.is_cuda_array(result) and type(result).__module__.startswith("numba")
    assert_matches_reference(op, xd, wd, bd, backend="cupy", x_host=x, w_host=w, b_host=b, **kwargs)


# --- errors: the same exceptions and words as on the CPU ------------------------------------

ERROR_CALLS = [
    ("conv2d", (2, 4, 7, 7), (3, 3, 3, 3), {}),                            # channel mismatch
    ("conv2d", (2, 4, 7, 7), (3, 2, 3, 3), {"groups": 2}),                 # K not divisible
    ("conv2d", (2, 3, 7, 7), (4, 3, 3, 3), {"padding": "full"}),
    ("conv2d", (2, 3, 7, 7), (4, 3, 3, 3), {"padding": 7, "padding_mode": "reflect"}),
    ("conv2d", (2, 3, 7, 7), (4, 3, 3, 3), {"stride": 2, "padding": "same"}),
    ("conv2d", (2, 3, 2, 2), (4, 3, 3, 3), {}),                            # kernel > input
    ("conv1d", (2, 3, 7, 7), (4, 3, 3), {}),                               # wrong rank
]


@pytest.mark.parametrize("op,x_shape,w_shape,kwargs", ERROR_CALLS)
def test_errors_match_cpu(cupy, op, x_shape, w_shape, kwargs):
    rng = np.random.default_rng(0)
    x = random_array(rng, x_shape, "float32")
    w = random_array(rng, w_shape, "float32")
    fn = getattr(conv, op)
    with pytest.raises((ValueError, TypeError)) as cpu_err:
        fn(x, w, **kwargs)
    with pytest.raises(type(cpu_err.value)) as gpu_err:
        fn(cupy.asarray(x), cupy.asarray(w), **kwargs)
    assert str(gpu_err.value) == str(cpu_err.value)


def test_dtype_mismatch_message(cupy):
    x = cupy.zeros((1, 3, 5, 5), cupy.float32)
    w = cupy.zeros((2, 3, 3, 3), cupy.float64)
    with pytest.raises(TypeError, match=r"Input type \(float\) and weight type \(double\) should "
                                        r"be the same"):
        conv.conv2d(x, w)


def test_mixing_cupy_and_numpy_raises(cupy):
    x = cupy.zeros((1, 3, 5, 5), cupy.float32)
    w = np.zeros((2, 3, 3, 3), np.float32)
    message = (f"Expected all tensors to be on the same device, but found at least two devices, "
               f"cuda:{x.device.id} and cpu!")
    with pytest.raises(ValueError) as err:
        conv.conv2d(x, w)
    assert str(err.value) == message
    with pytest.raises(ValueError) as err:
        conv.conv2d(cupy.asnumpy(x), cupy.asarray(w))
    assert str(err.value) == message


def test_unknown_algorithm(cupy):
    x = cupy.zeros((1, 3, 5, 5), cupy.float32)
    w = cupy.zeros((2, 3, 3, 3), cupy.float32)
    with pytest.raises(ValueError, match="has no algorithm 'fft'"):
        conv.conv2d(x, w, backend="cupy", algorithm="fft")


# --- workspace cap ----------------------------------------------------------------------------

@pytest.mark.parametrize("algorithm", ["im2col", "im2col_naive", "im2col_cublas"])
def test_workspace_cap_chunks_the_batch(cupy, workspace, algorithm):
    rng = np.random.default_rng(5)
    x = random_array(rng, (5, 3, 9, 10), "float32")
    w = random_array(rng, (4, 3, 3, 3), "float32")
    b = random_array(rng, (4,), "float32")
    per_image = 3 * 3 * 3 * 9 * 10 * 4          # C*R*S*P*Q*itemsize with padding=1
    workspace(2 * per_image)                    # two images per chunk -> 3 chunks
    assert_matches_reference("conv2d", *_to_device(cupy, x, w, b), backend="cupy",
                             algorithm=algorithm, x_host=x, w_host=w, b_host=b, padding=1)
    plan = _cupy_backend.last_plan()
    assert plan["chunks"] == 3 and plan["workspace_bytes"] <= 2 * per_image
    workspace(per_image - 1)                    # not even one image: the direct kernel runs
    assert_matches_reference("conv2d", *_to_device(cupy, x, w, b), backend="cupy",
                             algorithm=algorithm, x_host=x, w_host=w, b_host=b, padding=1)
    assert "fallback" in _cupy_backend.last_plan()


def test_workspace_limit_default_and_validation(cupy, workspace):
    assert 0 < _cupy_backend.workspace_limit() <= 1 << 30
    with pytest.raises(ValueError):
        workspace(0)


# --- property test ----------------------------------------------------------------------------

@st.composite
def _configs(draw):
    groups = draw(st.integers(1, 3))
    cfg = dict(
        n=draw(st.integers(1, 3)), c=groups * draw(st.integers(1, 3)),
        k=groups * draw(st.integers(1, 3)), h=draw(st.integers(1, 9)), w=draw(st.integers(1, 9)),
        r=draw(st.integers(1, 4)), s=draw(st.integers(1, 4)), groups=groups,
        stride=(draw(st.integers(1, 3)), draw(st.integers(1, 3))),
        dilation=(draw(st.integers(1, 2)), draw(st.integers(1, 2))),
        padding=(draw(st.integers(0, 2)), draw(st.integers(0, 2))),
        padding_mode=draw(st.sampled_from(["zeros", "reflect", "replicate", "circular"])),
        bias=draw(st.booleans()), dtype=draw(st.sampled_from(["float32", "float64", "complex64"])),
        algorithm=draw(st.sampled_from(_cupy_backend.ALGORITHMS)))
    return cfg


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cfg=_configs())
def test_property_random_configs(cupy, cfg):
    from conv._spec import make_spec
    rng = np.random.default_rng(0)
    x = random_array(rng, (cfg["n"], cfg["c"], cfg["h"], cfg["w"]), cfg["dtype"])
    w = random_array(rng, (cfg["k"], cfg["c"] // cfg["groups"], cfg["r"], cfg["s"]), cfg["dtype"])
    b = random_array(rng, (cfg["k"],), cfg["dtype"]) if cfg["bias"] else None
    kwargs = dict(stride=cfg["stride"], padding=cfg["padding"], dilation=cfg["dilation"],
                  groups=cfg["groups"], padding_mode=cfg["padding_mode"])
    try:
        make_spec("conv2d", x, w, b, **kwargs)
    except (ValueError, TypeError):
        assume(False)                          # not a valid PyTorch call
    assert_matches_reference("conv2d", *_to_device(cupy, x, w, b), backend="cupy",
                             algorithm=cfg["algorithm"], x_host=x, w_host=w, b_host=b, **kwargs)


# --- modules, bookkeeping ---------------------------------------------------------------------

def test_modules_on_cuda(cupy):
    layer = conv.Conv2d(3, 8, 3, padding=1, padding_mode="replicate", device="cuda", seed=0)
    assert isinstance(layer.weight, cupy.ndarray) and isinstance(layer.bias, cupy.ndarray)
    rng = np.random.default_rng(6)
    x = random_array(rng, (2, 3, 10, 11), "float32")
    out = layer(cupy.asarray(x))
    assert isinstance(out, cupy.ndarray)
    assert_matches_reference("conv2d", cupy.asarray(x), layer.weight, layer.bias, backend="cupy",
                             x_host=x, w_host=layer.weight.get(), b_host=layer.bias.get(),
                             padding=1, padding_mode="replicate")
    layer1 = conv.Conv1d(4, 6, 5, groups=2, device="cuda:0", dtype="float64", seed=1)
    x1 = random_array(rng, (4, 30), "float64")
    out1 = layer1(cupy.asarray(x1))
    assert isinstance(out1, cupy.ndarray) and out1.shape == (6, 26)
    assert_matches_reference("conv1d", cupy.asarray(x1), layer1.weight, layer1.bias,
                             backend="cupy", x_host=x1, w_host=layer1.weight.get(),
                             b_host=layer1.bias.get(), groups=2)


def test_compile_times_recorded(cupy):
    op, x, w, b, kwargs = _host_operands(CASES[0], "float32")
    conv.conv2d(*_to_device(cupy, x, w, b), backend="cupy", algorithm="im2col", **kwargs)
    times = _cupy_backend.compile_times()
    assert "im2col.cu[float32]" in times and "gemm.cu[float32]" in times
    assert all(t >= 0 for t in times.values())


def test_choose_algorithm_rule():
    from conv._spec import make_spec
    rng = np.random.default_rng(0)
    dense = make_spec("conv2d", random_array(rng, (1, 16, 8, 8), "float32"),
                      random_array(rng, (32, 16, 3, 3), "float32"), None, 1, 1, 1, 1)
    depthwise = make_spec("conv2d", random_array(rng, (1, 16, 8, 8), "float32"),
                          random_array(rng, (16, 1, 3, 3), "float32"), None, 1, 1, 1, 16)
    ints = make_spec("conv2d", random_array(rng, (1, 16, 8, 8), "int32"),
                     random_array(rng, (32, 16, 3, 3), "int32"), None, 1, 1, 1, 1)
    assert _cupy_backend.choose_algorithm(dense)[0] == "im2col"
    assert _cupy_backend.choose_algorithm(depthwise)[0] == "direct"
    assert _cupy_backend.choose_algorithm(ints)[0] == "direct"
