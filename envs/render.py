"""A pure-JAX rasteriser for the pixel variant of the reacher (jittable, vmappable).

The arena is seen from a camera straight above the base of the arm (orthographic, like
DeepMind control suite's `fixed` reacher camera at 64x64, whose view spans about the arena's
+-0.3 m). The image is drawn back to front on a plain background: the base as a small disk,
the two links as thick segments (distance-to-segment tests on the grid of pixel centres) and
the fingertip as a disk. Edges are anti-aliased by pixel coverage (a shape's opacity at a
pixel is `clip(0.5 + (radius - distance) / pixel_size, 0, 1)`). Goals are never drawn.

Image convention: `[H, W, 3]` uint8; row 0 is the top of the image (largest y), column 0 the
left (smallest x); world x points right and world y up, as seen from above.
"""

import jax
import jax.numpy as jnp

IMAGE_SIZE = 64  # pixels per side
HALF_WIDTH = 0.3  # m: the image spans [-HALF_WIDTH, HALF_WIDTH]^2 of the arena
LINK_RADIUS = 0.015  # m: half thickness of a drawn link (about 3 pixels thick at 64 px)
TIP_RADIUS = 0.02  # m: radius of the drawn fingertip disk
BASE_RADIUS = 0.015  # m: radius of the drawn base disk

BACKGROUND = (0.13, 0.17, 0.23)  # RGB in [0, 1]: a plain dark blue-grey floor
BASE_COLOUR = (0.55, 0.55, 0.55)
LINK_COLOUR = (0.7, 0.5, 0.3)  # dm_control's `self` material
TIP_COLOUR = (0.95, 0.25, 0.25)


def pixel_centres(size: int = IMAGE_SIZE, half_width: float = HALF_WIDTH) -> jax.Array:
    """World xy of every pixel centre. Returns [size, size, 2] (row, column, xy)."""
    pixel = 2.0 * half_width / size
    coords = -half_width + (jnp.arange(size, dtype=jnp.float32) + 0.5) * pixel
    x = jnp.broadcast_to(coords[None, :], (size, size))
    y = jnp.broadcast_to(coords[::-1, None], (size, size))
    return jnp.stack([x, y], axis=-1)


def _segment_distance_xy(x: jax.Array, y: jax.Array, a: jax.Array, b: jax.Array) -> jax.Array:
    """Distance from the points (x, y) (broadcastable arrays) to the segment a [2] -> b [2]."""
    abx, aby = b[0] - a[0], b[1] - a[1]
    inverse = 1.0 / jnp.maximum(abx * abx + aby * aby, 1e-12)
    s = jnp.clip(((x - a[0]) * abx + (y - a[1]) * aby) * inverse, 0.0, 1.0)
    dx, dy = x - a[0] - s * abx, y - a[1] - s * aby
    return jnp.sqrt(dx * dx + dy * dy)


def segment_distance(points: jax.Array, a: jax.Array, b: jax.Array) -> jax.Array:
    """Distance from points [..., 2] to the segment from a [2] to b [2]. Returns [...]."""
    return _segment_distance_xy(points[..., 0], points[..., 1], jnp.asarray(a), jnp.asarray(b))


def coverage(distance: jax.Array, radius: float, pixel: float) -> jax.Array:
    """Opacity of a shape of the given radius at pixels `distance` from its skeleton."""
    return jnp.clip(0.5 + (radius - distance) / pixel, 0.0, 1.0)


def render_arm(
    elbow: jax.Array,
    tip: jax.Array,
    size: int = IMAGE_SIZE,
    half_width: float = HALF_WIDTH,
) -> jax.Array:
    """Draws the two-link arm with its base at the origin.

    elbow: [2] world xy of the wrist joint (end of link 1); tip: [2] the fingertip.
    Returns a [size, size, 3] uint8 image. `size` and `half_width` must be Python numbers.
    The pixel grid is kept as a row of x [1, size] and a column of y [size, 1] that every
    distance broadcasts over (20x faster on CPU than stacking [size, size, 2] point arrays).
    """
    elbow = jnp.asarray(elbow, jnp.float32)
    tip = jnp.asarray(tip, jnp.float32)
    pixel = 2.0 * half_width / size
    coords = -half_width + (jnp.arange(size, dtype=jnp.float32) + 0.5) * pixel
    x, y = coords[None, :], coords[::-1, None]
    origin = jnp.zeros(2, jnp.float32)
    shapes = (
        (jnp.sqrt(x * x + y * y), BASE_RADIUS, BASE_COLOUR),
        (_segment_distance_xy(x, y, origin, elbow), LINK_RADIUS, LINK_COLOUR),
        (_segment_distance_xy(x, y, elbow, tip), LINK_RADIUS, LINK_COLOUR),
        (jnp.sqrt((x - tip[0]) ** 2 + (y - tip[1]) ** 2), TIP_RADIUS, TIP_COLOUR),
    )
    image = jnp.broadcast_to(jnp.asarray(BACKGROUND, jnp.float32), (size, size, 3))
    for distance, radius, colour in shapes:
        alpha = coverage(distance, radius, pixel)[..., None]
        image = image + alpha * (jnp.asarray(colour, jnp.float32) - image)
    return jnp.round(image * 255.0).astype(jnp.uint8)


def to_uint8(colour: tuple[float, float, float]) -> jax.Array:
    """A colour constant as the uint8 RGB value `render_arm` writes for a fully covered pixel."""
    return jnp.round(jnp.asarray(colour, jnp.float32) * 255.0).astype(jnp.uint8)
