"""Image files the tests write byte by byte: headers that claim sizes no pixels back."""

import struct
import zlib


def _chunk(kind, data):
    return (struct.pack(">I", len(data)) + kind + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))


def png_header(width, height):
    """A valid-looking RGB PNG of about 60 bytes whose header claims width × height pixels
    (a decompression bomb: decoding it would allocate width·height·3 bytes)."""
    return (b"\x89PNG\r\n\x1a\n"
            + _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + _chunk(b"IDAT", zlib.compress(b"")) + _chunk(b"IEND", b""))
