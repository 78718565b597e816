"""The commands of the `keras-maskrcnn` command line as Python functions with plain arguments:
make_shapes, show_data, evaluate, predict, export, convert_torchvision and demo (`cli` parses
the arguments and calls them).

TensorFlow is imported inside the functions, so `--help` answers at once. Mistakes a user can
fix (a missing or unreadable file, options that do not fit together) raise `UserError` with a
message naming the file.
"""

import contextlib
import json
import os
from typing import NamedTuple

from keras_maskrcnn.config import DEFAULT_MAX_IMAGE_PIXELS, TORCHVISION_BATCH_NORM_EPSILON
from keras_maskrcnn.export_config import INT8_CHECK_IMAGES

DEFAULT_SCORE_THRESHOLD = 0.5
DEFAULT_BATCH_SIZE = 8
DEMO_TRAIN_IMAGES = 2000
DEMO_VAL_IMAGES = 200
DEMO_IMAGE_SIZE = 128  # the tiny preset's canvas
DEMO_PREDICTED_IMAGES = 4
DEFAULT_SHOW_COUNT = 16
BAD_IMAGE_MODES = ("skip", "error")  # predict's --on-bad-image, as train's --on-bad-data
# What `predict` reads from a folder.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")
PREDICTIONS_FILE = "predictions.json"
SKIPPED_FILE = "skipped.json"


class PredictRun(NamedTuple):
    """What `predict` did: COCO results with `file_name`, images predicted, images skipped."""
    results: list
    predicted: int
    skipped: list


class UserError(Exception):
    """A problem the user can fix; `cli.main` prints it without a stack trace."""


@contextlib.contextmanager
def user_errors(*error_types):
    """Re-raise `error_types` as UserError; their messages already name the file."""
    try:
        yield
    except error_types as error:
        raise UserError(str(error)) from error


def _data_errors():
    from keras_maskrcnn.data import DataError
    return user_errors(DataError)


def _load_predictor(model_path, num_threads=None, precision="float32"):
    from keras_maskrcnn.inference import load_predictor
    with user_errors(FileNotFoundError, ValueError):
        return load_predictor(model_path, num_threads, precision)


def _write_json(value, path):
    directory = os.path.dirname(os.fspath(path))
    if directory:
        os.makedirs(directory, exist_ok=True)
    with open(path, "w") as f:
        json.dump(value, f, indent=2)


def make_shapes(out_dir, num_train, num_val, image_size, seed, options=None):
    """Write the synthetic shapes set; returns (train JSON, val JSON) paths.

    `options` is a `data.shapes.ShapesOptions` (None: the plain set)."""
    from keras_maskrcnn.data import make_shapes as write
    from keras_maskrcnn.data.shapes import ShapesOptions
    return write(out_dir, num_train, num_val, image_size=image_size, seed=seed,
                 options=ShapesOptions() if options is None else options)


def show_data(annotation_file, out_dir, image_dir=None, count=DEFAULT_SHOW_COUNT,
              on_bad_data="skip", max_image_pixels=DEFAULT_MAX_IMAGE_PIXELS):
    """Draw the ground truth (masks, boxes, class names) of the first `count` usable images.

    Bad data (images over `max_image_pixels` pixels among it) is skipped as training skips
    it, and the counts are printed; with `on_bad_data` "error" the first stops the run with
    UserError. Writes `out_dir/<image id>_<image stem>.png`; returns the paths written.
    """
    from keras_maskrcnn import training, visualize
    from keras_maskrcnn.data import DataError
    from keras_maskrcnn.data.validation import BadDataPolicy, report_decode_failure

    with _data_errors():
        policy = BadDataPolicy(on_bad_data)
        dataset = training.open_dataset(annotation_file, image_dir, policy,
                                        max_image_pixels=max_image_pixels)
    print(policy.summary(annotation_file))
    names = dict(zip(dataset.category_ids, dataset.class_names))
    written = []
    for image_id in dataset.image_ids:
        if len(written) == count:
            break
        try:
            image = dataset.load_image(image_id)
        except DataError as error:
            with _data_errors():
                report_decode_failure(policy, error, image_id)
            continue
        annotations = dataset.load_annotations(image_id)
        category_ids = dataset.label_to_category_id(annotations["labels"])
        labels = [names[int(category_id)] + (" (crowd)" if crowd else "")
                  for category_id, crowd in zip(category_ids, annotations["is_crowd"])]
        stem = os.path.splitext(os.path.basename(dataset.image_info(image_id)["file_name"]))[0]
        path = os.path.join(out_dir, f"{image_id}_{stem}.png")
        visualize.save_png(visualize.draw_detections(
            image, annotations["boxes"], labels, full_masks=annotations["masks"]), path)
        written.append(path)
    return written


def evaluate(model_path, annotation_file, image_dir=None, batch_size=DEFAULT_BATCH_SIZE, out=None,
             num_threads=None, precision="float32", on_bad_data="skip",
             max_image_pixels=DEFAULT_MAX_IMAGE_PIXELS):
    """COCO bbox and segm AP of a saved model on a COCO-format set; writes `out` if given.

    `model_path` is any kind `load_predictor` opens; `num_threads` is for `.tflite` models,
    `precision` (`inference.INFERENCE_PRECISIONS`) for `.keras` ones. The ground truth gets
    training's bad-data checks (`data.validation`): with `on_bad_data` "skip" bad annotations
    are left out of it, and bad images (missing, undecodable, over `max_image_pixels`) out of
    the AP, all counted and printed; with "error" the first stops the run with UserError.
    Returns {"bbox": {...}, "segm": {...}} as `evaluation.evaluate_coco` does; `out` also gets
    `images_evaluated`, `images_skipped` and `bad_data` (`BadDataPolicy.to_dict`: which
    images and annotations were left out, and why).
    """
    from tqdm import tqdm

    from keras_maskrcnn import evaluation, training
    from keras_maskrcnn.data.validation import BadDataPolicy

    with _data_errors():
        policy = BadDataPolicy(on_bad_data)
        dataset = training.open_dataset(annotation_file, image_dir, policy,
                                        max_image_pixels=max_image_pixels)
        print(policy.summary(annotation_file), flush=True)
        predictor = _load_predictor(model_path, num_threads, precision)
        with tqdm(total=len(dataset.image_ids), desc="evaluate", unit="image") as progress:
            metrics = evaluation.evaluate_predictor(predictor, dataset, batch_size, policy,
                                                    progress=progress.update)
    if out is not None:
        evaluated = sum(image_id not in policy.dropped_images for image_id in dataset.image_ids)
        _write_json(dict(metrics, images_evaluated=evaluated,
                         images_skipped=len(policy.dropped_images), bad_data=policy.to_dict()),
                    out)
    return metrics


def image_files(paths):
    """`paths` with each folder replaced by the image files directly in it (IMAGE_SUFFIXES,
    sorted by name). Raises UserError for a folder without any."""
    files = []
    for path in map(os.fspath, paths):
        if not os.path.isdir(path):
            files.append(path)
            continue
        found = sorted(entry.path for entry in os.scandir(path)
                       if entry.is_file() and entry.name.lower().endswith(IMAGE_SUFFIXES))
        if not found:
            raise UserError(f"{path}: a folder without image files ({' '.join(IMAGE_SUFFIXES)})")
        files.extend(found)
    return files


def predict(model_path, inputs, out_dir, score_threshold=DEFAULT_SCORE_THRESHOLD,
            batch_size=DEFAULT_BATCH_SIZE, num_threads=None, on_bad_image="skip",
            precision="float32", max_image_pixels=DEFAULT_MAX_IMAGE_PIXELS):
    """Draw detections scoring at least `score_threshold` on each image and save them as results.

    `inputs` are image files and folders of them (`image_files`); `model_path` is any kind
    `load_predictor` opens; `num_threads` is for `.tflite` models, `precision` for `.keras`
    ones. An image that is missing, cannot be decoded or is over `max_image_pixels` pixels
    (refused before decoding, `data.images`) is reported and skipped (`on_bad_image` "skip") or stops the run with
    UserError ("error"); so does finding no readable image at all.

    Writes `out_dir/<image stem>.png` per image, `out_dir/predictions.json`: COCO results
    (`image_id` is the image's 1-based position among the files) plus each image's
    `file_name`, and `out_dir/skipped.json`: [{"file_name", "problem"}]. Returns a
    `PredictRun`.
    """
    from tqdm import tqdm

    from keras_maskrcnn.data import DataError
    from keras_maskrcnn.data.images import decode_image, missing_image

    if on_bad_image not in BAD_IMAGE_MODES:
        raise UserError(f"unknown on_bad_image {on_bad_image!r}; choose one of {BAD_IMAGE_MODES}")
    image_paths = image_files(inputs)
    png_paths = [os.path.join(out_dir, os.path.splitext(os.path.basename(path))[0] + ".png")
                 for path in image_paths]
    drawn_from = {}
    for path, png_path in zip(image_paths, png_paths):
        if png_path in drawn_from:
            raise UserError(f"{drawn_from[png_path]} and {path} would both be drawn to {png_path}")
        drawn_from[png_path] = path
    results, skipped = [], []

    def bad_image(index, error):
        if on_bad_image == "error":
            raise UserError(str(error)) from error
        skipped.append({"file_name": image_paths[index], "problem": str(error)})
        print(f"skipped {error}", flush=True)

    # Missing files are found before the model loads; files that fail to decode, when read.
    readable = []
    for index, path in enumerate(image_paths):
        if os.path.isfile(path):
            readable.append(index)
        else:
            bad_image(index, missing_image(path))
    if not readable:
        _write_json(skipped, os.path.join(out_dir, SKIPPED_FILE))
        raise UserError(_none_readable(skipped, out_dir))
    predictor = _load_predictor(model_path, num_threads, precision)
    config = predictor.config
    class_names = (None if config.class_names is None
                   else dict(zip(config.dataset_category_ids(), config.class_names)))
    with tqdm(total=len(readable), desc="predict", unit="image") as progress:
        for start in range(0, len(readable), batch_size):
            indices, images = [], []
            for index in readable[start:start + batch_size]:
                try:
                    images.append(decode_image(image_paths[index], max_image_pixels))
                    indices.append(index)
                except DataError as error:
                    bad_image(index, error)
            detections = predictor.predict(images) if images else []
            for index, image, found in zip(indices, images, detections):
                keep = found["scores"] >= score_threshold
                found = predictor.add_full_masks({name: values[keep] for name, values in
                                                  found.items()}, image.shape[:2])
                results.extend(_draw_and_describe(image, found, class_names, png_paths[index],
                                                  image_paths[index], index + 1))
            progress.update(len(readable[start:start + batch_size]))
    position = {path: index for index, path in enumerate(image_paths)}
    skipped.sort(key=lambda entry: position[entry["file_name"]])  # in the files' order
    _write_json(results, os.path.join(out_dir, PREDICTIONS_FILE))
    _write_json(skipped, os.path.join(out_dir, SKIPPED_FILE))
    if len(skipped) == len(image_paths):
        raise UserError(_none_readable(skipped, out_dir))
    return PredictRun(results, len(image_paths) - len(skipped), skipped)


def _none_readable(skipped, out_dir):
    """The message of a predict run that found no image it could read."""
    listed = (f" (all are listed in {os.path.join(out_dir, SKIPPED_FILE)})"
              if len(skipped) > 1 else "")
    return f"none of the {len(skipped)} images could be read: {skipped[0]['problem']}{listed}"


def _draw_and_describe(image, detections, class_names, png_path, file_name, image_id):
    """Save one image with its detections (with `full_masks`) drawn; returns its COCO results
    with `file_name`."""
    from keras_maskrcnn import evaluation, visualize

    visualize.save_png(visualize.draw_detections(
        image, detections["boxes"], detections["category_ids"], detections["scores"],
        detections["full_masks"], class_names), png_path)
    return [dict(result, file_name=file_name)
            for result in evaluation.detections_to_coco_results(image_id, detections)]


def export(config):
    """Write the `.keras` model an `ExportConfig` names as a SavedModel folder or a `.tflite`
    file; returns its `out`.

    int8 calibrates on the first `calibration_images` images of `calibration_data` and compares
    its detections with the float model's on the next INT8_CHECK_IMAGES
    (`split_calibration_images`); the file holds that report (`litert.read_int8_report`). A
    bfloat16 SavedModel's export prints one line on this CPU's bfloat16 speed
    (`precision.bfloat16_speed`). Raises UserError for an `out` that cannot be written.
    """
    from keras_maskrcnn import training
    from keras_maskrcnn.export_config import ExportConfigError

    with user_errors(ExportConfigError):
        config.check_out_writable()
    calibration = held_out = None
    if config.calibration_data is not None:
        with _data_errors():
            dataset = training.open_dataset(config.calibration_data)
            images = [dataset.load_image(image_id) for image_id in
                      dataset.image_ids[:config.calibration_images + INT8_CHECK_IMAGES]]
        calibration, held_out = split_calibration_images(images, config.calibration_images)
    model = _load_keras_model(config.model, config.input_size)
    if config.format == "saved_model":
        from keras_maskrcnn.export.saved_model import export_saved_model
        from keras_maskrcnn.inference import with_precision
        from keras_maskrcnn.precision import precision_line

        print(precision_line(config.precision), flush=True)
        return export_saved_model(with_precision(model, config.precision), config.out,
                                  config.include_full_masks)
    from keras_maskrcnn.export.tflite import export_tflite
    return export_tflite(model, config.out, config.quantize, calibration, held_out,
                         config.camera_size)


def split_calibration_images(images, calibration_count):
    """(calibration images, held-out images) from `images`: the first `calibration_count`
    and the rest; when no images are left over, the last fifth (at least one) is held out."""
    if len(images) < 2:
        raise UserError(f"int8 export needs at least 2 calibration images, got {len(images)}")
    if len(images) <= calibration_count:
        calibration_count = len(images) - max(1, len(images) // 5)
    return images[:calibration_count], images[calibration_count:]


def _load_keras_model(model_path, input_size=None):
    """The `MaskRCNN` of a `.keras` file, rebuilt for canvas `input_size` (H, W) if given."""
    import dataclasses

    from keras_maskrcnn.inference import load_model
    from keras_maskrcnn.model import rebuild

    with user_errors(FileNotFoundError, ValueError):
        model = load_model(model_path)
    if input_size is None:
        return model
    config = model.model_config
    return rebuild(model, config.replace(
        input=dataclasses.replace(config.input, image_size=tuple(input_size))))


def convert_torchvision(checkpoint, out, batch_norm_epsilon=TORCHVISION_BATCH_NORM_EPSILON):
    """Write torchvision's `maskrcnn_resnet50_fpn` weights in `checkpoint` (a .pth state dict)
    as a `.keras` model of the `torchvision_r50_fpn` config; returns `out`.

    `batch_norm_epsilon` is the ε torchvision ran the checkpoint's batch norms with: 0 for its
    published COCO weights, 1e-5 for a model it built without them.
    """
    if not str(out).endswith(".keras"):
        raise UserError(f"{out}: the converted model's file name must end in .keras")
    from keras_maskrcnn.convert.torchvision import convert_checkpoint

    directory = os.path.dirname(os.fspath(out))
    if directory:
        os.makedirs(directory, exist_ok=True)
    with user_errors(FileNotFoundError, ImportError, ValueError):
        return convert_checkpoint(checkpoint, out, batch_norm_epsilon)


def demo(out_dir, num_train=DEMO_TRAIN_IMAGES, num_val=DEMO_VAL_IMAGES, epochs=None,
         steps_per_epoch=None, batch_size=None, seed=0):
    """Shapes data → tiny model → AP on val → drawn predictions, all under `out_dir`.

    The shapes set is small, so its decoded images are kept in memory after the first epoch
    (`cache`). Training computes no validation losses: the AP on val after it says more, and
    they added up to 40 s to some epochs. Returns the metrics dict.
    """
    from keras_maskrcnn import training
    from keras_maskrcnn.train_config import TrainConfig

    data_dir = os.path.join(out_dir, "data")
    run_dir = os.path.join(out_dir, "run")
    train_ann, val_ann = make_shapes(data_dir, num_train, num_val, DEMO_IMAGE_SIZE, seed)
    with _data_errors():
        training.train(TrainConfig(train=train_ann, preset="tiny", epochs=epochs,
                                   steps_per_epoch=steps_per_epoch, batch_size=batch_size,
                                   out=run_dir, seed=seed, cache=True))
    model_path = os.path.join(run_dir, training.MODEL_FILE)
    metrics = evaluate(model_path, val_ann, out=os.path.join(out_dir, "metrics.json"))
    val_set = training.open_dataset(val_ann)
    image_paths = [val_set.image_info(i)["path"] for i in val_set.image_ids[:DEMO_PREDICTED_IMAGES]]
    predict(model_path, image_paths, os.path.join(out_dir, "predictions"))
    return metrics
