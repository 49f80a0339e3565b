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
from conv import _gpu_arrays, registry
from conv.backend import cupy as _cupy_backend
from conv.plan import backend_availability
from tests._cases import CASE_IDS, CASES
from tests._helpers import (
    FLOAT_AND_COMPLEX,
    assert_matches_reference,
    assert_output_matches_reference,
    make_operands,
    refused_by_pytorch,
)

_OK, _WHY = backend_availability("cupy")
ALGORITHMS = [a.name for a in registry.algorithms("cupy")]
pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not _OK, reason=f"CuPy backend not usable: {_WHY}"),
    pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel lengths"),
]

DTYPES = FLOAT_AND_COMPLEX + ["bfloat16", "int32"]


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
    x, w, b = make_operands(("cupy", case, dtype, seed), x_shape, w_shape, dtype, bias=has_bias)
    return op, x, w, b, kwargs


def _to_device(cupy, *arrays):
    return tuple(None if a is None else cupy.asarray(a) for a in arrays)


# --- the shared grid ------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_grid(cupy, case, algorithm, dtype):
    op, x, w, b, kwargs = _host_operands(case, dtype)
    xd, wd, bd = _to_device(cupy, x, w, b)
    if refused_by_pytorch(dtype, kwargs):
        with pytest.raises(TypeError, match="slow_conv_dilated"):
            getattr(conv, op)(xd, wd, bd, backend="cupy", algorithm=algorithm, **kwargs)
        return
    if np.dtype(dtype) not in registry.algorithm("cupy", algorithm).dtypes:    # implicit_gemm
        with pytest.raises(TypeError, match="has no kernels for dtype"):
            getattr(conv, op)(xd, wd, bd, backend="cupy", algorithm=algorithm, **kwargs)
        return
    spec = conv.explain(op, x, w, b, backend="reference", **kwargs).spec
    if isinstance(registry.algorithm("cupy", algorithm).refusal(spec), ValueError):  # depthwise
        with pytest.raises(ValueError, match=f"'{algorithm}'"):
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


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_views_negative_strides_and_transposes(cupy, algorithm):
    rng = np.random.default_rng(3)
    base = cupy.asarray(make_operands(rng, (4, 6, 11, 13), None, "float32")[0])
    x = base[::-1, :, ::2, ::-1]                                   # negative and stepped strides
    w = cupy.asarray(make_operands(rng, (6, 3, 3, 4), None, "float32")[0]).transpose(0, 1, 3, 2)
    b = cupy.asarray(make_operands(rng, (12,), None, "float32")[0])[::2]
    before = base.get()
    if algorithm == "depthwise":               # groups 2 of C 6: refused (ValueError)
        with pytest.raises(ValueError, match="'depthwise'"):
            conv.conv2d(x, w, b, backend="cupy", algorithm=algorithm, padding=(1, 2), groups=2)
        return
    assert_matches_reference("conv2d", x, w, b, backend="cupy", algorithm=algorithm,
                             x_host=x.get(), w_host=w.get(), b_host=b.get(), padding=(1, 2),
                             groups=2, stride=(1, 2), padding_mode="reflect")
    np.testing.assert_array_equal(base.get(), before)


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_every_implicit_gemm_configuration(cupy, dtype):
    """Both tiles and their split-K forms (offered here: a small grid, CRS 144), every precision
    of the dtype, against the reference (float32's TF32 with TF32's tolerance is the emulated
    test's; here 3xTF32 and the 16-bit ones)."""
    x, w, b = make_operands(("gpu-igemm-configs", dtype), (2, 16, 7, 9), (20, 16, 3, 3), dtype,
                            bias=True)
    xd, wd, bd = _to_device(cupy, x, w, b)
    spec = conv.explain("conv2d", x, w, b, backend="reference", padding=1).spec
    names = _cupy_backend.configs(spec, "implicit_gemm")
    assert any("/k4" in c for c in names)
    for config in names:
        plan = conv.plan.make_plan(spec, xd, wd, bd, "cupy", "implicit_gemm", config=config)
        out = conv.plan.execute(plan, xd, wd, bd).reshape(spec.output_shape)
        assert_output_matches_reference("conv2d", out, x, w, b, where=f"{plan}", padding=1)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_views_pointwise_and_conv1d(cupy, algorithm):
    rng = np.random.default_rng(4)
    x = cupy.asarray(make_operands(rng, (3, 6, 9, 7), None, "float32")[0])[:, :, ::-1, :]
    w = cupy.asarray(make_operands(rng, (8, 6, 1, 1), None, "float32")[0])
    if algorithm == "depthwise":               # dense pointwise: refused (ValueError)
        with pytest.raises(ValueError, match="'depthwise'"):
            conv.conv2d(x, w, None, backend="cupy", algorithm=algorithm, stride=2)
        return
    assert_matches_reference("conv2d", x, w, None, backend="cupy", algorithm=algorithm,
                             x_host=x.get(), w_host=w.get(), stride=2)
    dtype = ("complex64" if np.dtype("complex64") in registry.algorithm("cupy", algorithm).dtypes
             else "float32")                                      # implicit_gemm: float32
    x1 = cupy.asarray(make_operands(rng, (6, 40), None, dtype)[0])[:, ::-2]      # unbatched conv1d
    w1 = cupy.asarray(make_operands(rng, (9, 2, 3), None, dtype)[0])
    b1 = cupy.asarray(make_operands(rng, (9,), None, dtype)[0])[::-1]
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
    x = make_operands(rng, x_shape, None, "float32")[0]
    w = make_operands(rng, w_shape, None, "float32")[0]
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
    x = make_operands(rng, (5, 3, 9, 10), None, "float32")[0]
    w = make_operands(rng, (4, 3, 3, 3), None, "float32")[0]
    b = make_operands(rng, (4,), None, "float32")[0]
    per_image = 3 * 3 * 3 * 9 * 10 * 4          # C*R*S*P*Q*itemsize with padding=1
    workspace(2 * per_image)                    # two images per chunk -> 3 chunks
    assert_matches_reference("conv2d", *_to_device(cupy, x, w, b), backend="cupy",
                             algorithm=algorithm, x_host=x, w_host=w, b_host=b, padding=1)
    plan = conv.explain("conv2d", *_to_device(cupy, x, w, b), backend="cupy", algorithm=algorithm,
                        padding=1)
    assert plan.chunks.count(plan.spec) == 3 and plan.workspace_bytes <= 2 * per_image
    per_row = per_image // 9
    workspace(3 * per_row)                      # not one image: bands of 3 output rows
    plan = conv.explain("conv2d", *_to_device(cupy, x, w, b), backend="cupy", algorithm=algorithm,
                        padding=1)
    assert plan.algorithm == algorithm and plan.chunks.rows == 3 and plan.chunks.count(plan.spec) == 15
    assert plan.workspace_bytes <= 3 * per_row
    assert_matches_reference("conv2d", *_to_device(cupy, x, w, b), backend="cupy",
                             algorithm=algorithm, x_host=x, w_host=w, b_host=b, padding=1)
    workspace(per_row - 1)                      # less than a row: one row runs, above the cap
    for mode in ("zeros", "reflect", "circular"):
        assert_matches_reference("conv2d", *_to_device(cupy, x, w, b), backend="cupy",
                                 algorithm=algorithm, x_host=x, w_host=w, b_host=b, padding=1,
                                 padding_mode=mode)


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
        algorithm=draw(st.sampled_from(ALGORITHMS)))
    return cfg


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cfg=_configs())
def test_property_random_configs(cupy, cfg):
    from conv._spec import make_spec
    rng = np.random.default_rng(0)
    x = make_operands(rng, (cfg["n"], cfg["c"], cfg["h"], cfg["w"]), None, cfg["dtype"])[0]
    w = make_operands(rng, (cfg["k"], cfg["c"] // cfg["groups"], cfg["r"], cfg["s"]), None, cfg["dtype"])[0]
    b = make_operands(rng, (cfg["k"],), None, cfg["dtype"])[0] if cfg["bias"] else None
    kwargs = dict(stride=cfg["stride"], padding=cfg["padding"], dilation=cfg["dilation"],
                  groups=cfg["groups"], padding_mode=cfg["padding_mode"])
    try:
        spec = make_spec("conv2d", x, w, b, **kwargs)
    except (ValueError, TypeError):
        assume(False)                          # not a valid PyTorch call
    # depthwise refuses groups != C (tests/test_emulated_depthwise.py)
    assume(registry.algorithm("cupy", cfg["algorithm"]).refusal(spec) is None)
    assert_matches_reference("conv2d", *_to_device(cupy, x, w, b), backend="cupy",
                             algorithm=cfg["algorithm"], x_host=x, w_host=w, b_host=b, **kwargs)


# --- modules, bookkeeping ---------------------------------------------------------------------

def test_modules_on_cuda(cupy):
    layer = conv.Conv2d(3, 8, 3, padding=1, padding_mode="replicate", device="cuda", seed=0)
    assert isinstance(layer.weight, cupy.ndarray) and isinstance(layer.bias, cupy.ndarray)
    rng = np.random.default_rng(6)
    x = make_operands(rng, (2, 3, 10, 11), None, "float32")[0]
    out = layer(cupy.asarray(x))
    assert isinstance(out, cupy.ndarray)
    assert_matches_reference("conv2d", cupy.asarray(x), layer.weight, layer.bias, backend="cupy",
                             x_host=x, w_host=layer.weight.get(), b_host=layer.bias.get(),
                             padding=1, padding_mode="replicate")
    layer1 = conv.Conv1d(4, 6, 5, groups=2, device="cuda:0", dtype="float64", seed=1)
    x1 = make_operands(rng, (4, 30), None, "float64")[0]
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


def test_auto_rule():
    from conv._spec import make_spec
    rng = np.random.default_rng(0)
    dense = make_spec("conv2d", make_operands(rng, (1, 16, 8, 8), None, "float32")[0],
                      make_operands(rng, (32, 16, 3, 3), None, "float32")[0], None, 1, 1, 1, 1)
    depthwise = make_spec("conv2d", make_operands(rng, (1, 16, 8, 8), None, "float32")[0],
                          make_operands(rng, (16, 1, 3, 3), None, "float32")[0], None, 1, 1, 1, 16)
    ints = make_spec("conv2d", make_operands(rng, (1, 16, 8, 8), None, "int32")[0],
                     make_operands(rng, (32, 16, 3, 3), None, "int32")[0], None, 1, 1, 1, 1)
    assert registry.auto_algorithm("cupy", dense)[0].name == "im2col"
    assert registry.auto_algorithm("cupy", depthwise)[0].name == "direct"
    assert registry.auto_algorithm("cupy", ints)[0].name == "direct"
