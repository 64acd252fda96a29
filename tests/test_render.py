"""The reacher rasteriser: known configurations light the expected pixels; jit, vmap, dtype."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from envs import render

SIZE = render.IMAGE_SIZE
PIXEL = 2 * render.HALF_WIDTH / SIZE
LINK = np.array(render.to_uint8(render.LINK_COLOUR))
TIP = np.array(render.to_uint8(render.TIP_COLOUR))
BACKGROUND = np.array(render.to_uint8(render.BACKGROUND))


def _column(x):
    return int((x + render.HALF_WIDTH) / PIXEL)


def _row(y):
    return int((render.HALF_WIDTH - y) / PIXEL)


def test_pixel_centres():
    centres = np.array(render.pixel_centres())
    assert centres.shape == (SIZE, SIZE, 2)
    np.testing.assert_allclose(centres[0, 0], [-0.3 + PIXEL / 2, 0.3 - PIXEL / 2], atol=1e-7)  # top left
    np.testing.assert_allclose(centres[-1, -1], [0.3 - PIXEL / 2, -0.3 + PIXEL / 2], atol=1e-7)
    assert _column(0.1) == 42 and _row(0.1) == 21


def test_segment_distance_by_hand():
    a, b = jnp.array([0.0, 0.0]), jnp.array([1.0, 0.0])
    points = jnp.array([[0.5, 0.2], [-0.3, 0.4], [1.5, 0.0], [0.25, 0.0]])
    np.testing.assert_allclose(np.array(render.segment_distance(points, a, b)), [0.2, 0.5, 0.5, 0.0], atol=1e-7)
    # a degenerate segment is a point
    np.testing.assert_allclose(float(render.segment_distance(jnp.array([3.0, 4.0]), a, a)), 5.0, atol=1e-6)


def test_arm_straight_along_x():
    image = np.array(render.render_arm(jnp.array([0.12, 0.0]), jnp.array([0.24, 0.0])))
    assert image.shape == (SIZE, SIZE, 3) and image.dtype == np.uint8
    # the two rows around y = 0 (centres at +-PIXEL/2, inside the 0.015 m half thickness) are link
    # colour from just past the base disk to just before the fingertip disk
    for row in (31, 32):
        for col in range(_column(0.03), _column(0.21)):
            np.testing.assert_array_equal(image[row, col], LINK)
    np.testing.assert_array_equal(image[31, _column(0.24)], TIP)
    # far from the arm: background; left of the base, above and below the links
    for row, col in ((0, 0), (63, 63), (31, _column(-0.1)), (_row(0.1), _column(0.1)), (_row(-0.1), _column(0.2))):
        np.testing.assert_array_equal(image[row, col], BACKGROUND)
    # nothing is drawn beyond the fingertip disk
    assert np.all(image[:, _column(0.24 + 0.02 + PIXEL) :] == BACKGROUND)


def test_arm_folded_up_along_y():
    elbow = jnp.array([0.0, 0.12])
    tip = jnp.array([0.12, 0.12])  # wrist bent by -90 deg: second link along +x
    image = np.array(render.render_arm(elbow, tip))
    for col in (31, 32):
        for row in range(_row(0.10), _row(0.03) + 1):
            np.testing.assert_array_equal(image[row, col], LINK)
    for col in range(_column(0.03), _column(0.09)):
        np.testing.assert_array_equal(image[_row(0.12), col], LINK)
    np.testing.assert_array_equal(image[_row(0.12), _column(0.12)], TIP)
    np.testing.assert_array_equal(image[_row(-0.1), _column(0.0)], BACKGROUND)
    np.testing.assert_array_equal(image[_row(0.0), _column(0.12)], BACKGROUND)


def _arms(n, seed):
    q = jax.random.uniform(jax.random.key(seed), (n, 2), minval=-math.pi, maxval=math.pi)
    elbow = 0.12 * jnp.stack([jnp.cos(q[:, 0]), jnp.sin(q[:, 0])], -1)
    tip = elbow + 0.12 * jnp.stack([jnp.cos(q.sum(-1)), jnp.sin(q.sum(-1))], -1)
    return elbow, tip


def _assert_same_image(a, b):
    """Equal up to float rounding: XLA may fuse the compositing differently (jit vs eager), which
    can move an anti-aliased edge pixel across a rounding boundary by one level."""
    diff = np.abs(np.asarray(a, np.int32) - np.asarray(b, np.int32))
    assert diff.max() <= 1 and np.mean(diff > 0) < 0.01


def test_jit_matches_no_jit():
    elbow, tip = _arms(3, 0)
    for i in range(3):
        _assert_same_image(jax.jit(render.render_arm)(elbow[i], tip[i]), render.render_arm(elbow[i], tip[i]))


def test_vmap_matches_loop():
    elbow, tip = _arms(5, 1)
    batched = np.array(jax.jit(jax.vmap(render.render_arm))(elbow, tip))
    assert batched.shape == (5, SIZE, SIZE, 3)
    single = jax.jit(render.render_arm)
    for i in range(5):
        _assert_same_image(batched[i], single(elbow[i], tip[i]))


@pytest.mark.parametrize("size", [32, 96])
def test_other_sizes(size):
    image = render.render_arm(jnp.array([0.12, 0.0]), jnp.array([0.24, 0.0]), size=size)
    assert image.shape == (size, size, 3) and image.dtype == jnp.uint8
    pixel = np.array(image[size // 2, int(size * 0.75)])  # x = 0.15, just below y = 0
    if size == 96:  # pixel centre 0.003 m off the axis: fully inside the link
        np.testing.assert_array_equal(pixel, LINK)
    else:
        # By hand: pixels of 0.6 / 32 = 0.01875 m, this one's centre (0.159375, -0.009375) is
        # 0.009375 m from the second link and far (> 1.5 pixels) from every other shape, so its
        # coverage is 0.5 + (0.015 - 0.009375) / 0.01875 = 0.8 of the link colour over the background.
        background, link = np.array(render.BACKGROUND), np.array(render.LINK_COLOUR)
        expected = 255 * (background + 0.8 * (link - background))
        np.testing.assert_allclose(pixel, expected, atol=0.51)  # the rounding to uint8
