"""Polygon filling in numpy, written apart from `serving.masks`, for tests that read back the
server's polygon masks.

Shapes: h×w the mask; a ring is a flat list [x0, y0, x1, y1, ...] in pixels.
"""

import numpy as np


def even_odd_fill(rings, height, width):
    """Pixels whose centres the rings enclose by the even-odd rule → bool [height, width]."""
    y, x = np.mgrid[0:height, 0:width] + 0.5
    inside = np.zeros((height, width), bool)
    for ring in rings:
        points = np.asarray(ring, float).reshape(-1, 2)
        for (x0, y0), (x1, y1) in zip(points, np.roll(points, -1, axis=0)):
            if y0 != y1:
                crossing = (y >= min(y0, y1)) & (y < max(y0, y1))
                inside ^= crossing & (x < x0 + (y - y0) * (x1 - x0) / (y1 - y0))
    return inside
