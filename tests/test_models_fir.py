"""FIR up/down-sampling (sde_jax.models.fir) against direct convolutions and closed forms."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.signal import convolve2d

from sde_jax.models import fir

KERNELS = [(1, 3, 3, 1), (1, 1), (1, 2, 1), (1, 4, 6, 4, 1)]


def _rand(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape)


def _direct(x, k, *, up, down):
    """Reference: zero-insert by ``up``, full 2-D convolution with ``outer(k, k)`` (normalised, gain up^2),
    crop with the paper's pad rule and keep every ``down``-th pixel; per image and channel, in numpy."""
    k1 = np.asarray(k, np.float64)
    kk = np.outer(k1, k1) / np.sum(k1) ** 2 * up**2
    kh = len(k1)
    factor = max(up, down)
    p = kh - factor
    p0 = (p + 1) // 2 + (up - 1)
    b, h, w, c = x.shape
    out_h = h * up // down
    y = np.zeros((b, out_h, out_h if h == w else w * up // down, c))
    for i in range(b):
        for j in range(c):
            xu = np.zeros((h * up, w * up))
            xu[::up, ::up] = x[i, :, :, j]
            full = convolve2d(xu, kk, mode="full")
            off = kh - 1 - p0
            y[i, :, :, j] = full[off:off + out_h * down:down, off:off + y.shape[2] * down:down]
    return y


@pytest.mark.parametrize("k", KERNELS)
def test_upsample_equals_direct_convolution(x64, k):
    x = _rand((2, 6, 6, 3))
    np.testing.assert_allclose(np.asarray(fir.upsample_2d(jnp.asarray(x), k)), _direct(x, k, up=2, down=1),
                               rtol=0, atol=1e-12)


@pytest.mark.parametrize("k", KERNELS)
def test_downsample_equals_direct_convolution(x64, k):
    x = _rand((2, 8, 8, 3), seed=1)
    np.testing.assert_allclose(np.asarray(fir.downsample_2d(jnp.asarray(x), k)), _direct(x, k, up=1, down=2),
                               rtol=0, atol=1e-12)


def test_131_kernel_closed_forms(x64):
    """[1,3,3,1] upsampling is half-pixel bilinear interpolation and downsampling the (1,3,3,1)/8 average
    centred between pixels 2n and 2n+1, away from the zero-padded border."""
    x = jnp.asarray(_rand((1, 8, 8, 2), seed=2))
    up = np.asarray(fir.upsample_2d(x, (1, 3, 3, 1)))
    bil = np.asarray(jax.image.resize(x, (1, 16, 16, 2), "bilinear"))
    np.testing.assert_allclose(up[:, 1:-1, 1:-1], bil[:, 1:-1, 1:-1], atol=1e-12)
    down = np.asarray(fir.downsample_2d(x, (1, 3, 3, 1)))
    k = np.array([1, 3, 3, 1]) / 8.0
    xn = np.asarray(x)
    for n in (1, 2):
        for m in (1, 2):
            ref = np.einsum("i,j,ijc->c", k, k, xn[0, 2 * n - 1:2 * n + 3, 2 * m - 1:2 * m + 3])
            np.testing.assert_allclose(down[0, n, m], ref, atol=1e-12)


def test_up_then_down_is_identity_on_constant_images(x64):
    c = jnp.full((1, 16, 16, 2), 3.5)
    # Box kernel: exact everywhere.
    np.testing.assert_allclose(fir.downsample_2d(fir.upsample_2d(c, (1, 1)), (1, 1)), c, atol=1e-12)
    # [1,3,3,1]: exact away from the border; the border is attenuated because pixels outside are zero
    # (as in the paper's code).
    y = np.asarray(fir.downsample_2d(fir.upsample_2d(c, (1, 3, 3, 1)), (1, 3, 3, 1)))
    np.testing.assert_allclose(y[:, 1:-1, 1:-1], 3.5, atol=1e-12)
    assert np.all(y[:, 0, :] < 3.5)


def test_naive_resampling_matches_box_kernel(x64):
    x = jnp.asarray(_rand((2, 8, 8, 3), seed=3))
    np.testing.assert_allclose(fir.naive_upsample_2d(x), fir.upsample_2d(x, (1, 1)), atol=1e-12)
    np.testing.assert_allclose(fir.naive_downsample_2d(x), fir.downsample_2d(x, (1, 1)), atol=1e-12)


def test_fused_conv_resampling_equals_separate_ops_in_the_interior(x64):
    """upsample_conv_2d = conv(upsample(x)) and conv_downsample_2d = downsample(conv(x)) away from the
    border; the fused ops pad once, so the border differs (as in StyleGAN2 / the paper's code)."""
    x = jnp.asarray(_rand((1, 8, 8, 2), seed=4))
    w = jnp.asarray(_rand((3, 3, 2, 4), seed=5))

    def conv(v):
        return jax.lax.conv_general_dilated(v, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))

    up = fir.upsample_conv_2d(x, w, (1, 3, 3, 1)) - conv(fir.upsample_2d(x, (1, 3, 3, 1)))
    np.testing.assert_allclose(up[:, 2:-2, 2:-2], 0.0, atol=1e-12)
    down = fir.conv_downsample_2d(x, w, (1, 3, 3, 1)) - fir.downsample_2d(conv(x), (1, 3, 3, 1))
    np.testing.assert_allclose(down[:, 1:-1, 1:-1], 0.0, atol=1e-12)


@pytest.mark.parametrize("size", [4, 8, 16, 32, 64, 128, 256, 512, 1024])
def test_shapes_at_every_resolution(size):
    x = jax.ShapeDtypeStruct((2, size, size, 3), jnp.float32)
    w = jax.ShapeDtypeStruct((3, 3, 3, 5), jnp.float32)
    k = (1, 3, 3, 1)
    assert jax.eval_shape(lambda v: fir.upsample_2d(v, k), x).shape == (2, 2 * size, 2 * size, 3)
    assert jax.eval_shape(lambda v: fir.downsample_2d(v, k), x).shape == (2, size // 2, size // 2, 3)
    assert jax.eval_shape(lambda v, u: fir.upsample_conv_2d(v, u, k), x, w).shape == (2, 2 * size, 2 * size, 5)
    assert jax.eval_shape(lambda v, u: fir.conv_downsample_2d(v, u, k), x, w).shape == (2, size // 2, size // 2, 5)


def test_bad_kernels_and_factors_raise():
    x = jnp.zeros((1, 4, 4, 1))
    with pytest.raises(ValueError, match="sum to zero"):
        fir.upsample_2d(x, (1, -1))
    with pytest.raises(ValueError, match="square"):
        fir.setup_kernel(np.ones((2, 3)))
    with pytest.raises(ValueError, match="factor"):
        fir.downsample_2d(x, (1, 1), factor=0)


def _upfirdn_numpy(x, k2, *, up, down, pad):
    """Reference upfirdn2d in numpy: zero insertion, zero pad (negative: crop), 'valid' true convolution with
    the 2-D kernel, every ``down``-th pixel; per image and channel."""
    p0, p1 = pad
    b, h, w, c = x.shape
    out = []
    for i in range(b):
        chans = []
        for j in range(c):
            z = np.zeros((h * up, w * up))
            z[::up, ::up] = x[i, :, :, j]
            z = np.pad(z, [(max(p0, 0), max(p1, 0))] * 2)
            z = z[max(-p0, 0):z.shape[0] - max(-p1, 0), max(-p0, 0):z.shape[1] - max(-p1, 0)]
            chans.append(convolve2d(z, k2, mode="valid")[::down, ::down])
        out.append(np.stack(chans, -1))
    return np.stack(out)


# (up, down, pad): the paper's (2, 1, (2, 1)) and (1, 2, (1, 1)), factor 3, both factors > 1, crops.
UPFIRDN_CASES = [(2, 1, (2, 1)), (1, 2, (1, 1)), (3, 1, (1, 3)), (1, 3, (0, 2)), (2, 2, (1, 2)),
                 (2, 1, (-1, 0)), (1, 1, (3, -1))]


@pytest.mark.parametrize("up,down,pad", UPFIRDN_CASES)
def test_separable_upfirdn2d_equals_numpy_reference(x64, up, down, pad):
    """The separable path of upfirdn2d (two 1-D polyphase/strided passes) against zero insertion + a full 2-D
    convolution in numpy, for an asymmetric separable kernel (so a flip error shows), float64, atol 1e-12."""
    x = _rand((2, 7, 6, 2), seed=6)
    a, b = np.array([1.0, 2.0, 5.0]), np.array([3.0, -1.0, 0.5, 2.0])
    k2 = np.outer(a, b)
    y = np.asarray(fir.upfirdn2d(jnp.asarray(x), k2, up=up, down=down, pad=pad))
    np.testing.assert_allclose(y, _upfirdn_numpy(x, k2, up=up, down=down, pad=pad), rtol=0, atol=1e-12)


def test_non_separable_kernel_uses_the_convolution_and_matches_numpy(x64):
    """A rank-2 kernel cannot be split into 1-D passes: upfirdn2d must still equal the numpy reference
    (float64, atol 1e-12), upsampling and downsampling."""
    x = _rand((1, 6, 6, 2), seed=7)
    k2 = np.array([[1.0, 2.0, 0.0], [0.0, 1.0, 3.0], [2.0, 0.0, 1.0]])
    assert fir._separable(k2) is None
    for up, down, pad in [(2, 1, (1, 1)), (1, 2, (1, 0))]:
        y = np.asarray(fir.upfirdn2d(jnp.asarray(x), k2, up=up, down=down, pad=pad))
        np.testing.assert_allclose(y, _upfirdn_numpy(x, k2, up=up, down=down, pad=pad), rtol=0, atol=1e-12)


def test_float32_resampling_matches_float64_within_rounding():
    """float32 path: the [1,3,3,1] taps are exact binary fractions (1/4, 3/4, 1/8, 3/8), so the float32
    result equals the float64 one up to float32 rounding of a few adds (rtol 1e-6, atol 1e-6 for |x| ~ 1)."""
    x = _rand((2, 8, 8, 3), seed=8)
    for op in (fir.upsample_2d, fir.downsample_2d):
        y32 = op(jnp.asarray(x, jnp.float32), (1, 3, 3, 1))
        assert y32.dtype == jnp.float32
        with jax.enable_x64(True):
            y64 = np.asarray(op(jnp.asarray(x), (1, 3, 3, 1)))
        np.testing.assert_allclose(np.asarray(y32), y64, rtol=1e-6, atol=1e-6)


def test_upfirdn1d_filters_one_axis_and_rejects_empty_output(x64):
    """upfirdn1d along W (up 2, pad (2, 1), asymmetric kernel) equals zero insertion + np.convolve 'valid' on
    every row (float64, atol 1e-12); an output of length < 1 raises ValueError naming the sizes."""
    x = _rand((1, 5, 6, 2), seed=9)
    k = np.array([1.0, 2.0, 4.0, 0.5])
    y = np.asarray(jax.jit(lambda v: fir.upfirdn1d(v, k, axis=2, up=2, pad=(2, 1)))(jnp.asarray(x)))
    assert y.shape == (1, 5, 12, 2)
    for i in range(5):
        for c in range(2):
            z = np.zeros(12)
            z[::2] = x[0, i, :, c]
            np.testing.assert_allclose(y[0, i, :, c], np.convolve(np.pad(z, (2, 1)), k, mode="valid"),
                                       rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="empty output"):
        fir.upfirdn1d(jnp.asarray(x), np.ones(9), axis=1)
