"""Image files for the serving tests: ordinary pictures, an EXIF-rotated JPEG, and a hostile
one (a PNG header claiming 60000 × 60000)."""

import io
import struct
import zlib

import numpy as np
from PIL import ExifTags, Image

EXIF_ROTATE_90 = 6  # EXIF orientation: the stored pixels are shown turned 90° clockwise


def picture(height, width, seed):
    """A noisy uint8 [height, width, 3] image with a coloured rectangle."""
    rng = np.random.default_rng(seed)
    image = np.clip(rng.normal(120, 30, (height, width, 3)), 0, 255).astype(np.uint8)
    image[height // 4:height // 2, width // 5:width // 2] = (200, 40, 40)
    return image


def encode(image, image_format, **options):
    """uint8 [h, w, 3] → the bytes of an image file."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format=image_format, **options)
    return buffer.getvalue()


def exif_rotated_jpeg(stored):
    """A JPEG of `stored` pixels whose EXIF says to show them turned 90°."""
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = EXIF_ROTATE_90
    return encode(stored, "JPEG", quality=95, exif=exif)


def _png_chunk(kind, data):
    return (struct.pack(">I", len(data)) + kind + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))


def png_claiming(width, height):
    """A few-byte PNG whose header claims width × height RGB pixels (its data holds one row)."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    row = zlib.compress(b"\x00" + b"\x00" * 3 * min(width, 1024))
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", row)
            + _png_chunk(b"IEND", b""))
