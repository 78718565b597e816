"""Binary masks as COCO polygons that pycocotools rasterizes back to exactly the same pixels.

Shapes: H, W mask size. A polygon is a flat list [x1, y1, x2, y2, ...] of pixel-corner
coordinates (pixel (r, c) spans x in [c, c + 1], y in [r, r + 1]), as COCO writes them.
"""

import numpy as np
from pycocotools import mask as mask_utils


def mask_outlines(mask):
    """Outlines of bool [H, W] `mask` along pixel edges → list of polygons, one per loop.

    Outer outlines run clockwise on screen (the mask on their right), holes' the other way.
    Where two pixels of the mask touch only at a corner, the outlines part there. Vertices
    where an outline goes straight on are left out.
    """
    padded = np.pad(np.asarray(mask, bool), 1)
    rows, cols = np.nonzero(padded[1:-1, 1:-1])
    # Each edge between a mask pixel and a background pixel, directed with the mask on its right.
    edges = {}
    for y, x in zip(rows.tolist(), cols.tolist()):
        if not padded[y, x + 1]:
            edges.setdefault((x, y), []).append((x + 1, y))          # top
        if not padded[y + 1, x + 2]:
            edges.setdefault((x + 1, y), []).append((x + 1, y + 1))  # right
        if not padded[y + 2, x + 1]:
            edges.setdefault((x + 1, y + 1), []).append((x, y + 1))  # bottom
        if not padded[y + 1, x]:
            edges.setdefault((x, y + 1), []).append((x, y))          # left
    outlines = []
    while edges:
        start = min(edges)  # the smallest key keeps the result independent of dict order
        loop, previous, current = [], None, start
        # Every vertex has as many edges in as out, so the walk can only end back at `start`.
        while current != start or start in edges:
            ahead = edges[current]
            following = ahead[0]
            if len(ahead) > 1 and previous is not None:
                # Two pixels meet at this corner only: turn right, round the current pixel.
                dx, dy = current[0] - previous[0], current[1] - previous[1]
                following = (current[0] - dy, current[1] + dx)
            ahead.remove(following)
            if not ahead:
                del edges[current]
            loop.append(current)
            previous, current = current, following
        outlines.append(_without_straight_vertices(loop))
    return outlines


def _without_straight_vertices(loop):
    """Flat [x1, y1, ...] of `loop`'s corners only (vertices where the direction changes)."""
    points = np.array(loop, np.int64)
    before, after = np.roll(points, 1, axis=0), np.roll(points, -1, axis=0)
    cross = ((points - before)[:, 0] * (after - points)[:, 1]
             - (points - before)[:, 1] * (after - points)[:, 0])
    return points[cross != 0].astype(float).ravel().tolist()


def exact_polygons(mask):
    """COCO polygons of bool [H, W] `mask` when they rasterize back to it exactly, else None:
    an empty mask, or one with a hole (COCO's polygons are unioned: a hole cannot be written)."""
    mask = np.asarray(mask, bool)
    polygons = mask_outlines(mask)
    if not polygons:
        return None
    height, width = mask.shape
    decoded = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(polygons, height, width)))
    return polygons if np.array_equal(decoded.astype(bool), mask) else None
