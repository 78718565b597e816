"""Encodings of one pasted mask for `:detect` answers (`MASK_FORMATS`).

Shapes: H, W the image; M the model's mask resolution.

- `rle`: COCO's compressed RLE `{"size": [H, W], "counts": str}`, as pycocotools writes it
  (`pycocotools.mask.decode` gives the mask back exactly).
- `png`: base64 of a 1-bit grayscale PNG of H × W, white (255 once decoded) inside the mask.
- `polygon`: list of closed rings `[x0, y0, x1, y1, ...]` along pixel edges (image pixels, a
  pixel (r, c) spanning x in [c, c + 1], y in [r, r + 1]); outer rings run clockwise on the
  screen (y down), holes counter-clockwise, and filling them with the even-odd rule gives the
  mask exactly.
- `box`: the M × M box-frame probabilities (rows top to bottom of the box), rounded to
  BOX_DECIMALS.
- `none`: no mask.
"""

import base64
import io

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

MASK_FORMATS = ("rle", "png", "polygon", "box", "none")
BOX_DECIMALS = 3


def encode_rle(mask):
    """bool [H, W] → {"size": [H, W], "counts": str} (COCO compressed RLE)."""
    # A column-major bool mask (as `postprocess.paste_masks` gives) is encoded without a copy.
    rle = mask_utils.encode(np.asfortranarray(mask, dtype=bool).view(np.uint8))
    return {"size": [int(side) for side in rle["size"]], "counts": rle["counts"].decode("ascii")}


def encode_png(mask):
    """bool [H, W] → base64 str of a 1-bit grayscale PNG, white inside."""
    buffer = io.BytesIO()
    Image.fromarray(np.asarray(mask, bool)).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def encode_box(probabilities):
    """float [M, M] → M lists of M floats rounded to BOX_DECIMALS."""
    return np.round(np.asarray(probabilities, np.float64), BOX_DECIMALS).tolist()


def encode_polygon(mask):
    """bool [H, W] → list of rings [x0, y0, x1, y1, ...] (see the module docstring)."""
    mask = np.asarray(mask, bool)
    rows, cols = np.nonzero(np.any(mask, axis=1))[0], np.nonzero(np.any(mask, axis=0))[0]
    if len(rows) == 0:
        return []
    top, left = rows[0], cols[0]
    # One pixel of background all round, so every boundary edge lies between two array cells.
    crop = np.pad(mask[top:rows[-1] + 1, left:cols[-1] + 1], 1)
    width = crop.shape[1] + 1  # vertices per row of the corner grid
    inside = crop[1:-1, 1:-1]
    r, c = np.nonzero(inside)
    r, c = r + 1, c + 1  # cell coordinates in `crop`
    # Directed edges with the inside on their right: top → +x, right → +y, bottom → -x,
    # left → -y. Vertex (x, y) of the corner grid has the id y * width + x.
    starts, ends = [], []
    for outside, (x0, y0, x1, y1) in (
            (~crop[r - 1, c], (0, 0, 1, 0)), (~crop[r, c + 1], (1, 0, 1, 1)),
            (~crop[r + 1, c], (1, 1, 0, 1)), (~crop[r, c - 1], (0, 1, 0, 0))):
        rr, cc = r[outside], c[outside]
        starts.append((rr + y0) * width + cc + x0)
        ends.append((rr + y1) * width + cc + x1)
    following = {}
    for start, end in zip(np.concatenate(starts).tolist(), np.concatenate(ends).tolist()):
        following.setdefault(start, []).append(end)
    rings = []
    while following:
        # Every vertex has as many edges in as out, so following edges from any vertex closes
        # a ring; which way a ring leaves a vertex two rings touch does not change the fill.
        start = vertex = next(iter(following))
        ring = []
        while True:
            ring.append(vertex)
            ends = following[vertex]
            following_vertex = ends.pop()
            if not ends:
                del following[vertex]
            vertex = following_vertex
            if vertex == start:
                break
        rings.append(_ring_coordinates(ring, width, left - 1, top - 1))
    return rings


def _ring_coordinates(ring, width, x_offset, y_offset):
    """Vertex ids of a closed ring → [x0, y0, ...] in image pixels without collinear points."""
    ids = np.asarray(ring)
    xy = np.stack([ids % width + x_offset, ids // width + y_offset], axis=1)
    before, after = np.roll(xy, 1, axis=0), np.roll(xy, -1, axis=0)
    incoming, outgoing = xy - before, after - xy
    turns = incoming[:, 0] * outgoing[:, 1] != incoming[:, 1] * outgoing[:, 0]
    return xy[turns].reshape(-1).tolist()


# The encoders of the formats that paste the mask into the image: bool [H, W] → JSON value.
PASTED_ENCODERS = {"rle": encode_rle, "png": encode_png, "polygon": encode_polygon}
