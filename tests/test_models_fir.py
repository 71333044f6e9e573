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
