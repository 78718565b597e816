"""Image files and bytes to pixels: the one place the package opens an image.

Shapes: h, w the image's size as displayed (after its EXIF orientation).

Every image is untrusted input, from a data set, a `predict` argument or an upload to the
server. `read_image_size` reads the header only; `decode_image` decodes the pixels. Both
refuse an image whose header claims more than `max_pixels` pixels (h·w; the option
`--max-image-pixels` of every command that reads images, default
`config.DEFAULT_MAX_IMAGE_PIXELS`, PIL's decompression-bomb limit) before a pixel is decoded:
a 1 KB PNG claiming 20000×20000 costs a header read, not 1.2 GB. Every way PIL fails on a
malformed file becomes a `DataError` naming the file, with the kind `data.validation` counts:

- missing_image: the path is not a file;
- image_too_large: over `max_pixels` (PIL's own `DecompressionBombError` included: it is
  not an OSError);
- unreadable_image: the header cannot be parsed, the image has no pixels, or its EXIF is
  corrupt while Python turns warnings into errors (`-W error`);
- truncated_image: the header parsed but the pixels do not decode (a cut-off download).
"""

import contextlib
import io
import os
import re
import threading

import numpy as np
from PIL import ExifTags, Image, ImageOps

from keras_maskrcnn.config import DEFAULT_MAX_IMAGE_PIXELS
from keras_maskrcnn.data.errors import DataError

# EXIF orientations 5..8 turn the stored pixels by 90° (or transpose them), swapping h and w.
_TRANSPOSING_ORIENTATIONS = (5, 6, 7, 8)
# PIL's modes for one-channel 16-bit (and 32-bit integer) pixels; convert("RGB") would clip
# them at 255, so they are scaled instead (PNG's 16-bit range maps onto 0..255).
_WIDE_INTEGER_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N")
_UINT16_TO_UINT8 = 257.0  # 65535 / 255
# PIL plugins fail on malformed files with many exception types besides OSError: SyntaxError,
# ValueError, EOFError, struct.error, DecompressionBombError, and under `-W error` the
# warnings they emit (corrupt EXIF, DecompressionBombWarning). Any of them while reading one
# file is bad data in that file, never a crash of the run; only BaseExceptions that are not
# Exceptions (KeyboardInterrupt, SystemExit) pass.
_DECODE_FAILURES = Exception
_PIL_LIMIT_LOCK = threading.Lock()


def missing_image(path):
    """The DataError of an image file that does not exist."""
    return DataError(f"{path}: image file not found", "missing_image")


def too_large(name, width, height, max_pixels):
    """The DataError of an image whose header claims more than `max_pixels` pixels."""
    return DataError(f"{name}: image is {width}x{height} (w x h), {width * height:,} pixels, "
                     f"over the limit of {max_pixels:,} (--max-image-pixels)", "image_too_large")


def read_image_size(source, max_pixels=DEFAULT_MAX_IMAGE_PIXELS, name=None):
    """(h, w) of an image as `decode_image` returns it, from the header only.

    `source` is a file path or the encoded bytes; `name` names it in messages (default: the
    path, or "image bytes"). Raises DataError (see the module docstring) when the file is
    missing, its header cannot be parsed, or it is over `max_pixels`.
    """
    name = _name(source, name)
    with _opened(source, name, max_pixels) as image:
        width, height = image.size
        try:
            # PNG's getexif() decodes the pixels to look for EXIF after them; a header check
            # takes only EXIF stored before the pixels (where PIL writes it).
            orientation = (None if image.format == "PNG" and "exif" not in image.info
                           else image.getexif().get(ExifTags.Base.Orientation))
        except _DECODE_FAILURES as error:
            raise DataError(f"{name}: cannot read the image's EXIF ({_describe(error)})",
                            "unreadable_image") from error
    if orientation in _TRANSPOSING_ORIENTATIONS:
        return width, height
    return height, width


def decode_image(source, max_pixels=DEFAULT_MAX_IMAGE_PIXELS, name=None):
    """RGB pixels of an image file or of encoded bytes, EXIF orientation applied; uint8 [h, w, 3].

    `source` is a file path or the encoded bytes (an upload); `name` names it in messages
    (default: the path, or "image bytes"). The header's size is checked against `max_pixels`
    before any pixel is decoded. Grayscale, palette, RGBA, CMYK and float images are converted
    to RGB (float ones clipped to 0..255); 16-bit grayscale is scaled to 8 bits. Raises
    DataError (see the module docstring) naming `name`.
    """
    name = _name(source, name)
    with _opened(source, name, max_pixels) as image:
        try:
            # The header parsed, so a failure here is in the pixel data: a cut-off download.
            image.load()
            image = ImageOps.exif_transpose(image)
            if image.mode in _WIDE_INTEGER_MODES:
                gray = np.asarray(image, np.float64)
                gray = np.rint(np.clip(gray, 0, 65535) / _UINT16_TO_UINT8).astype(np.uint8)
                return np.repeat(gray[..., None], 3, axis=-1)
            return np.asarray(image.convert("RGB"), np.uint8)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
            # A GIF frame or TIFF tile larger than the header's size, over PIL's limit.
            raise _over_pils_limit(name, error, max_pixels) from error
        except _DECODE_FAILURES as error:
            raise DataError(f"{name}: image is truncated or corrupt ({_describe(error)})",
                            "truncated_image") from error


@contextlib.contextmanager
def _opened(source, name, max_pixels):
    """The PIL image of `source`, opened with its size checked and closed on exit."""
    if not (isinstance(max_pixels, int) and max_pixels >= 1):
        raise ValueError(f"max_pixels must be a whole number ≥ 1, got {max_pixels!r}")
    is_path = not isinstance(source, (bytes, bytearray, memoryview))
    if is_path and not os.path.isfile(source):
        raise missing_image(name)
    _raise_pil_limit(max_pixels)
    try:
        image = Image.open(source if is_path else io.BytesIO(source))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise _over_pils_limit(name, error, max_pixels) from error
    except _DECODE_FAILURES as error:
        raise DataError(f"{name}: cannot read image ({_describe(error)})",
                        "unreadable_image") from error
    with image:
        width, height = image.size
        if width * height > max_pixels:
            raise too_large(name, width, height, max_pixels)
        if width < 1 or height < 1:
            raise DataError(f"{name}: image is {width}x{height} (w x h), it has no pixels",
                            "unreadable_image")
        yield image


def _over_pils_limit(name, error, max_pixels):
    """The DataError of PIL's own decompression-bomb refusal, which PIL makes only above its
    limit, never below `max_pixels` (`_raise_pil_limit`)."""
    claimed = re.search(r"\((\d+) pixels\)", str(error))
    size = f"{int(claimed.group(1)):,} pixels" if claimed else "more pixels"
    return DataError(f"{name}: image claims {size}, over the limit of {max_pixels:,} "
                     f"(--max-image-pixels)", "image_too_large")


def _raise_pil_limit(max_pixels):
    """Let PIL open images up to `max_pixels`: above `Image.MAX_IMAGE_PIXELS` PIL warns, above
    twice it refuses. Raising the limit changes it for the whole process; it is never lowered,
    as this module's own check is the one that applies."""
    with _PIL_LIMIT_LOCK:
        if Image.MAX_IMAGE_PIXELS is not None and max_pixels > Image.MAX_IMAGE_PIXELS:
            Image.MAX_IMAGE_PIXELS = max_pixels


def _name(source, name):
    if name is not None:
        return name
    return "image bytes" if isinstance(source, (bytes, bytearray, memoryview)) else os.fspath(source)


def _describe(error):
    """An exception as `Type: message` when its message alone would not say what failed."""
    text = str(error).strip()
    return text if isinstance(error, (OSError, SyntaxError, ValueError)) and text else (
        f"{type(error).__name__}: {text}" if text else type(error).__name__)
