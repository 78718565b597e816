"""No input file can crash a run: oversized, corrupt and odd images, written by the tests.

`data.images` is the one place images are opened; these tests feed it decompression bombs,
headers over the pixel limit, corrupt EXIF with warnings as errors, files without pixels,
every PIL mode and corrupted files of each format, then run the commands on them.
"""

import io
import json
import random
import warnings

import numpy as np
import pytest
from PIL import Image

from keras_maskrcnn.config import DEFAULT_MAX_IMAGE_PIXELS
from keras_maskrcnn.data import DataError, decode_image, read_image_size
from keras_maskrcnn.data.validation import BadDataPolicy
from keras_maskrcnn.training import open_dataset

from image_files import png_header

BOMB_SIDE = 20000  # 400 M pixels: over twice PIL's limit, so PIL itself raises
CORRUPTIONS_PER_FORMAT = 60


def _encoded(image, image_format, **options):
    buffer = io.BytesIO()
    image.save(buffer, image_format, **options)
    return buffer.getvalue()


def _rgb(height=24, width=32, seed=0):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (height, width, 3),
                                                                np.uint8))


def _corrupt_exif_jpeg():
    """A JPEG whose EXIF block promises an entry its bytes do not hold."""
    return _encoded(Image.new("RGB", (8, 6), (200, 10, 10)), "JPEG",
                    exif=b"Exif\x00\x00MM\x00*\x00\x00\x00\x08\x00\x05\x01\x12")


def test_default_limit_is_pils_bomb_limit():
    assert DEFAULT_MAX_IMAGE_PIXELS == Image.MAX_IMAGE_PIXELS


@pytest.mark.parametrize("side", [BOMB_SIDE, 10000])  # over twice PIL's limit; between
def test_a_bomb_is_refused_from_its_header_without_decoding(side, tmp_path, monkeypatch):
    path = tmp_path / "bomb.png"
    path.write_bytes(png_header(side, side))
    assert path.stat().st_size < 100

    def no_decoding(self):
        raise AssertionError("the pixels of an image over the limit were decoded")

    monkeypatch.setattr(Image.Image, "load", no_decoding)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", Image.MAX_IMAGE_PIXELS)  # restored after
    for read in (read_image_size, decode_image):
        for source in (str(path), path.read_bytes()):
            with pytest.raises(DataError) as error, warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                read(source)
            assert error.value.kind == "image_too_large"
            message = str(error.value)
            assert "--max-image-pixels" in message
            assert (str(path) if isinstance(source, str) else "image bytes") in message
    # PIL warns between its limit and twice it; with warnings as errors it is still bad data.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(DataError) as error:
            decode_image(str(path))
    assert error.value.kind == "image_too_large"


def test_the_limit_is_width_times_height_and_can_be_raised(tmp_path, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", Image.MAX_IMAGE_PIXELS)  # restored after
    data = _encoded(_rgb(24, 32), "PNG")
    assert decode_image(data, max_pixels=24 * 32).shape == (24, 32, 3)
    with pytest.raises(DataError, match=r"photo.png: image is 32x24 \(w x h\), 768 pixels, over "
                       r"the limit of 767 \(--max-image-pixels\)") as error:
        decode_image(data, max_pixels=767, name="photo.png")
    assert error.value.kind == "image_too_large"
    # A limit above PIL's own lets PIL open what it would refuse (header only here).
    header = png_header(BOMB_SIDE, BOMB_SIDE)
    assert read_image_size(header, max_pixels=BOMB_SIDE ** 2) == (BOMB_SIDE, BOMB_SIDE)
    for bad in (0, -5, 1.5, None):
        with pytest.raises(ValueError, match="max_pixels"):
            decode_image(data, max_pixels=bad)


def test_corrupt_exif_is_bad_data_when_warnings_are_errors(tmp_path):
    path = tmp_path / "exif.jpg"
    path.write_bytes(_corrupt_exif_jpeg())
    with pytest.warns(UserWarning, match="Corrupt EXIF"):
        assert decode_image(str(path)).shape == (6, 8, 3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for read in (read_image_size, decode_image):
            with pytest.raises(DataError, match=r"exif.jpg: .*Corrupt EXIF") as error:
                read(str(path))
            assert error.value.kind == "unreadable_image"  # JPEG reads its EXIF on opening


def test_images_without_pixels_garbage_and_cut_files_are_named(tmp_path):
    cases = {"empty.png": (png_header(0, 5), "unreadable_image"),
             "nothing.jpg": (b"", "unreadable_image"),
             "garbage.gif": (b"GIF89a" + bytes(range(40)), "unreadable_image"),
             "cut.png": (_encoded(_rgb(64, 64), "PNG")[:300], "truncated_image")}
    for name, (data, kind) in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(DataError, match=name) as error:
            decode_image(str(tmp_path / name))
        assert error.value.kind == kind, name
    with pytest.raises(DataError, match="gone.png: image file not found") as error:
        read_image_size(str(tmp_path / "gone.png"))
    assert error.value.kind == "missing_image"


@pytest.mark.parametrize("mode", ["1", "L", "LA", "P", "RGBA", "CMYK", "I;16", "I", "F",
                                  "YCbCr"])
def test_every_pil_mode_decodes_to_rgb_uint8(mode):
    gray = np.arange(12 * 10, dtype=np.uint8).reshape(12, 10)
    image = Image.fromarray(gray).convert(mode)
    if mode == "P":
        image.info["transparency"] = 3
    image_format = {"CMYK": "JPEG", "YCbCr": "JPEG", "I": "TIFF", "F": "TIFF"}.get(mode, "PNG")
    pixels = decode_image(_encoded(image, image_format))
    assert pixels.dtype == np.uint8 and pixels.shape == (12, 10, 3)


@pytest.mark.parametrize("image_format", ["PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP"])
def test_corrupted_files_of_each_format_raise_only_data_error(image_format):
    """Flipped bytes and cuts reach PIL's plugins' other exceptions (struct.error, EOFError,
    DecompressionBombError from a corrupted size, warnings as errors): each is DataError."""
    image = _rgb(24, 32)
    options = {}
    if image_format == "JPEG":
        exif = Image.new("RGB", (1, 1)).getexif()
        exif[0x0112] = 6
        options["exif"] = exif
    data = _encoded(image.convert("P") if image_format == "GIF" else image, image_format,
                    **options)
    rng = random.Random(image_format)
    kinds = set()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for _ in range(CORRUPTIONS_PER_FORMAT):
            corrupted = bytearray(data)
            for _ in range(rng.randint(1, 6)):
                corrupted[rng.randrange(len(corrupted))] = rng.randrange(256)
            if rng.random() < 0.3:
                corrupted = corrupted[:rng.randrange(len(corrupted))]
            for read in (read_image_size, decode_image):
                try:
                    read(bytes(corrupted))
                except DataError as error:
                    kinds.add(error.kind)
    assert kinds <= {"unreadable_image", "truncated_image", "image_too_large"}
