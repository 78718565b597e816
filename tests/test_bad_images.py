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


# The commands on sets holding such files.

SIDE = 32
CATEGORIES = [{"id": 3, "name": "three"}, {"id": 7, "name": "seven"}]


def _square(annotation_id, image_id, bbox=(4, 4, 12, 12), category_id=3, segmentation=None):
    """An annotation of a 12-px square; `bbox` and `segmentation` replace its own when given."""
    square = [[4, 4, 16, 4, 16, 16, 4, 16]]
    return {"id": annotation_id, "image_id": image_id, "category_id": category_id,
            "iscrowd": 0, "bbox": list(bbox) if isinstance(bbox, tuple) else bbox,
            "area": 144.0, "segmentation": square if segmentation is None else segmentation}


def _write_set(folder, entries, annotations, name="annotations.json"):
    """Write annotations naming `entries` {file name: bytes or None (missing)} → path."""
    folder.mkdir(parents=True, exist_ok=True)
    images = []
    for image_id, (file_name, data) in enumerate(entries.items(), 1):
        if data is not None:
            (folder / file_name).write_bytes(data)
        images.append({"id": image_id, "file_name": file_name, "height": SIDE, "width": SIDE})
    path = folder / name
    path.write_text(json.dumps({"images": images, "annotations": annotations,
                                "categories": CATEGORIES}))
    return path


def _good_png(seed):
    return _encoded(_rgb(SIDE, SIDE, seed), "PNG")


@pytest.fixture(scope="module")
def mixed_set(tmp_path_factory):
    """Images 1-2 good, 3 a bomb (header 20000×20000), 4 missing, 5 cut off after its header;
    every image has one good square."""
    root = tmp_path_factory.mktemp("mixed")
    entries = {"a.png": _good_png(1), "b.png": _good_png(2),
               "bomb.png": png_header(BOMB_SIDE, BOMB_SIDE), "gone.png": None,
               "cut.png": _good_png(3)[:200]}
    path = _write_set(root, entries, [_square(i, i) for i in range(1, 6)])
    # The bomb's entry says its claimed size, so only the pixel limit can catch it.
    data = json.loads(path.read_text())
    data["images"][2].update(height=BOMB_SIDE, width=BOMB_SIDE)
    path.write_text(json.dumps(data))
    return path


def test_show_data_skips_or_stops_on_a_bomb(mixed_set, tmp_path, run_cli):
    code, out, err = run_cli("show-data", mixed_set, "--out", tmp_path / "shown")
    assert code == 0, err
    assert "image_too_large" in out and "bomb.png" in out and "drew 2 images" in out
    assert "cut.png" in err  # found when decoded, and said so
    code, out, err = run_cli("show-data", mixed_set, "--out", tmp_path / "stopped",
                             "--on-bad-data", "error")
    assert code == 2 and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1 and "bomb.png" in err


def test_train_scan_skips_a_bomb_and_counts_it(mixed_set):
    policy = BadDataPolicy("skip")
    dataset = open_dataset(str(mixed_set), bad_data=policy, images_option="--train-images")
    assert dataset.image_ids == [1, 2, 5]  # the cut file passes the header check
    assert policy.counts == {"image_too_large": 1, "missing_image": 1}
    assert sorted(policy.dropped_images) == [3, 4]
    with pytest.raises(DataError, match="bomb.png"):
        open_dataset(str(mixed_set), bad_data=BadDataPolicy("error"))


def test_train_stops_on_an_image_over_the_limit_naming_file_and_option(tmp_path, run_cli):
    path = _write_set(tmp_path, {"a.png": _good_png(1), "b.png": _good_png(2)},
                      [_square(1, 1), _square(2, 2)])
    code, _, err = run_cli("train", "--train", path, "--preset", "tiny", "--out", tmp_path / "run",
                           "--on-bad-data", "error", "--max-image-pixels", SIDE * SIDE - 1)
    assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert "a.png" in err and "--max-image-pixels" in err


def test_missing_images_say_how_many_where_and_which_option(tmp_path, run_cli):
    """COCO's layout, annotations/ beside train2017/, given without the image folder."""
    images = tmp_path / "train2017"
    images.mkdir()
    for name in ("1.png", "2.png", "3.png"):
        (images / name).write_bytes(_good_png(0))
    annotations = _write_set(tmp_path / "annotations", dict.fromkeys(["1.png", "2.png", "3.png"]),
                             [_square(1, 1)], name="instances_train2017.json")
    looked = tmp_path / "annotations"
    for argv, option in [(["show-data", annotations, "--out", tmp_path / "shown"], "--images"),
                         (["train", "--train", annotations, "--preset", "tiny",
                           "--out", tmp_path / "run"], "--train-images")]:
        code, out, err = run_cli(*argv)
        assert code == 2, err
        assert "no usable images" in err and "3 missing_image" in err
        assert str(looked / "1.png") in err
        assert f"looked for under {looked}, the annotation file's folder" in err
        assert f"{option} DIR names the image folder" in err
    code, _, err = run_cli("train", "--train", annotations, "--train-images", images,
                           "--val", annotations, "--preset", "tiny", "--batch-size", 2,
                           "--out", tmp_path / "run",
                           "--on-bad-data", "error")
    assert code == 2 and "--val-images DIR names the image folder" in err
    assert len(err.strip().splitlines()) == 1 and str(looked / "1.png") in err
    code, out, _ = run_cli("show-data", annotations, "--images", images, "--out",
                           tmp_path / "shown")
    assert code == 0 and "drew 3 images" in out


@pytest.fixture(scope="module")
def saved_model(untrained_tiny_model, tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "model.keras"
    untrained_tiny_model.save(path)
    return path


@pytest.mark.slow
def test_evaluate_checks_ground_truth_and_leaves_skipped_images_out(saved_model, mixed_set,
                                                                     tmp_path, run_cli):
    data = json.loads(mixed_set.read_text())
    data["annotations"] += [
        _square(10, 1, bbox="4, 4, 12, 12"),          # not a list: pycocotools' crash
        _square(11, 2, segmentation=[]),               # empty: an IndexError in pycocotools
        _square(12, 2, bbox=[float("nan"), 4, 12, 12]),  # no detection could match it
    ]
    annotations = mixed_set.parent / "evaluate.json"
    annotations.write_text(json.dumps(data))
    metrics_path = tmp_path / "metrics.json"
    code, out, err = run_cli("evaluate", "--model", saved_model, "--data", annotations,
                             "--batch-size", 2, "--out", metrics_path)
    assert code == 0, err
    metrics = json.loads(metrics_path.read_text())
    assert metrics["images_evaluated"] == 2 and metrics["images_skipped"] == 3
    bad = metrics["bad_data"]
    assert bad["counts"] == {"image_too_large": 1, "missing_image": 1, "bad_box": 2,
                             "missing_segmentation": 1, "truncated_image": 1}
    assert [entry["image_id"] for entry in bad["dropped_images"]] == [3, 4, 5]
    assert all(0 <= metrics[iou]["AP"] <= 1 for iou in ("bbox", "segm"))
    assert "bad_box" in out and "annotation 10" in out

    code, _, err = run_cli("evaluate", "--model", saved_model, "--data", annotations,
                           "--on-bad-data", "error")
    assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert "bomb.png" in err


@pytest.mark.slow
def test_predict_skips_or_stops_on_a_bomb(saved_model, tmp_path, run_cli):
    (tmp_path / "a.png").write_bytes(_good_png(1))
    (tmp_path / "bomb.png").write_bytes(png_header(BOMB_SIDE, BOMB_SIDE))
    inputs = [tmp_path / "a.png", tmp_path / "bomb.png"]
    code, out, err = run_cli("predict", "--model", saved_model, *inputs, "--out", tmp_path / "p")
    assert code == 0, err
    skipped = json.loads((tmp_path / "p" / "skipped.json").read_text())
    assert [entry["file_name"] for entry in skipped] == [str(inputs[1])]
    assert "--max-image-pixels" in skipped[0]["problem"]
    code, _, err = run_cli("predict", "--model", saved_model, *inputs, "--out", tmp_path / "q",
                           "--on-bad-image", "error")
    last = err.strip().splitlines()[-1]  # after the progress bar
    assert code == 2 and "Traceback" not in err
    assert last == (f"keras-maskrcnn predict: error: {inputs[1]}: image claims 400,000,000 "
                    f"pixels, over the limit of 89,478,485 (--max-image-pixels)")
