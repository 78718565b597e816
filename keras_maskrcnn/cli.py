"""The `keras-maskrcnn` command line: make-shapes, train, show-data, evaluate, predict, export,
convert-torchvision and demo.

TensorFlow is imported inside the commands, so `--help` answers at once. Mistakes a user can
fix (a missing or unreadable file) end with a one-line message naming the file and exit code 2.
"""

import argparse
import contextlib
import json
import os
import sys

from keras_maskrcnn import __version__
from keras_maskrcnn.config import PRESETS

PROG = "keras-maskrcnn"
USER_ERROR_EXIT_CODE = 2  # argparse's code for bad usage
DEFAULT_SCORE_THRESHOLD = 0.5
DEFAULT_BATCH_SIZE = 8
DEMO_TRAIN_IMAGES = 1000
DEMO_VAL_IMAGES = 100
DEMO_IMAGE_SIZE = 128  # the tiny preset's canvas
DEMO_PREDICTED_IMAGES = 4
DEFAULT_SHOW_COUNT = 16
EXPORT_FORMATS = ("saved_model", "tflite")
# export.tflite.QUANTIZATIONS, repeated so that --help need not import TensorFlow.
QUANTIZATIONS = ("none", "float16", "dynamic", "int8")
DEFAULT_CALIBRATION_IMAGES = 100
MODEL_HELP = "a .keras file, a SavedModel folder or a .tflite file"
# convert.torchvision.PUBLISHED_BATCH_NORM_EPSILON, repeated so that --help need not import TensorFlow.
TORCHVISION_BATCH_NORM_EPSILON = 0.0
THREADS_HELP = "LiteRT interpreter threads, for .tflite models (default: 1)"
# model.BACKBONE_PARTS, repeated so that --help need not import TensorFlow.
BACKBONE_PARTS = 5


class UserError(Exception):
    """A problem the user can fix; main() prints it without a stack trace."""


@contextlib.contextmanager
def _user_errors(*error_types):
    """Re-raise `error_types` as UserError; their messages already name the file."""
    try:
        yield
    except error_types as error:
        raise UserError(str(error)) from error


def _data_errors():
    from keras_maskrcnn.data import DataError
    return _user_errors(DataError)


def _load_predictor(model_path, num_threads=None):
    from keras_maskrcnn.inference import load_predictor
    with _user_errors(FileNotFoundError, ValueError):
        return load_predictor(model_path, num_threads)


def _write_json(value, path):
    directory = os.path.dirname(os.fspath(path))
    if directory:
        os.makedirs(directory, exist_ok=True)
    with open(path, "w") as f:
        json.dump(value, f, indent=2)


# Commands, callable from Python with plain arguments.

def make_shapes(out_dir, num_train, num_val, image_size, seed):
    """Write the synthetic shapes set; returns (train JSON, val JSON) paths."""
    from keras_maskrcnn.data import make_shapes as write
    return write(out_dir, num_train, num_val, image_size=image_size, seed=seed)


def show_data(annotation_file, out_dir, image_dir=None, count=DEFAULT_SHOW_COUNT):
    """Draw the ground truth (masks, boxes, class names) of the first `count` usable images.

    Bad data is skipped as training skips it, and the counts are printed. Writes
    `out_dir/<image id>_<image stem>.png`; returns the paths written.
    """
    from keras_maskrcnn import training, visualize
    from keras_maskrcnn.data import DataError
    from keras_maskrcnn.data.validation import BadDataPolicy, report_decode_failure

    policy = BadDataPolicy("skip")
    with _data_errors():
        dataset = training.open_dataset(annotation_file, image_dir, policy)
    print(policy.summary(annotation_file))
    names = dict(zip(dataset.category_ids, dataset.class_names))
    written = []
    for image_id in dataset.image_ids:
        if len(written) == count:
            break
        try:
            image = dataset.load_image(image_id)
        except DataError as error:
            report_decode_failure(policy, error)
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
             num_threads=None):
    """COCO bbox and segm AP of a saved model on a COCO-format set; writes `out` if given.

    `model_path` is any kind `load_predictor` opens; `num_threads` is for `.tflite` models.
    Returns {"bbox": {...}, "segm": {...}} as `evaluation.evaluate_coco` does.
    """
    from tqdm import tqdm

    from keras_maskrcnn import evaluation, training
    from keras_maskrcnn.inference import predict_in_batches

    with _data_errors():
        dataset = training.open_dataset(annotation_file, image_dir)
        predictor = _load_predictor(model_path, num_threads)
        images = (dataset.load_image(image_id) for image_id in dataset.image_ids)
        results = []
        with tqdm(total=len(dataset.image_ids), desc="evaluate", unit="image") as progress:
            detections = predict_in_batches(predictor, images, batch_size, progress.update)
            for image_id, found in zip(dataset.image_ids, detections):
                # load_image has checked that the pixels have the annotated size.
                info = dataset.image_info(image_id)
                results.extend(evaluation.detections_to_coco_results(
                    image_id, found, (info["height"], info["width"]),
                    predictor.config.detection.paste_method))
    metrics = evaluation.evaluate_coco(dataset.coco, results, image_ids=dataset.image_ids)
    if out is not None:
        _write_json(metrics, out)
    return metrics


def predict(model_path, image_paths, out_dir, score_threshold=DEFAULT_SCORE_THRESHOLD,
            batch_size=DEFAULT_BATCH_SIZE, num_threads=None):
    """Draw detections scoring at least `score_threshold` on each image and save them as results.

    `model_path` is any kind `load_predictor` opens; `num_threads` is for `.tflite` models.

    Writes `out_dir/<image stem>.png` per image and `out_dir/predictions.json`: COCO results
    (`image_id` is the image's 1-based position in `image_paths`) plus each image's `file_name`.
    Returns the results list.
    """
    from tqdm import tqdm

    from keras_maskrcnn.data.coco import read_image

    png_paths = [os.path.join(out_dir, os.path.splitext(os.path.basename(path))[0] + ".png")
                 for path in image_paths]
    drawn_from = {}
    for path, png_path in zip(image_paths, png_paths):
        if not os.path.isfile(path):
            raise UserError(f"{path}: image file not found")
        if png_path in drawn_from:
            raise UserError(f"{drawn_from[png_path]} and {path} would both be drawn to {png_path}")
        drawn_from[png_path] = path
    predictor = _load_predictor(model_path, num_threads)
    config = predictor.config
    class_names = (None if config.class_names is None
                   else dict(zip(config.dataset_category_ids(), config.class_names)))
    results = []
    with tqdm(total=len(image_paths), desc="predict", unit="image") as progress:
        for start in range(0, len(image_paths), batch_size):
            with _data_errors():
                images = [read_image(path) for path in image_paths[start:start + batch_size]]
            for index, (image, found) in enumerate(zip(images, predictor.predict(images)), start):
                keep = found["scores"] >= score_threshold
                found = {name: values[keep] for name, values in found.items()}
                results.extend(_draw_and_describe(image, found, class_names, png_paths[index],
                                                  image_paths[index], index + 1,
                                                  config.detection.paste_method))
            progress.update(len(images))
    _write_json(results, os.path.join(out_dir, "predictions.json"))
    return results


def _draw_and_describe(image, detections, class_names, png_path, file_name, image_id,
                       paste_method):
    """Save one image with its detections drawn; returns its COCO results with `file_name`."""
    from keras_maskrcnn import evaluation, postprocess, visualize

    full_masks = postprocess.paste_masks(detections["masks"], detections["boxes"], image.shape[:2],
                                         method=paste_method)
    visualize.save_png(visualize.draw_detections(
        image, detections["boxes"], detections["category_ids"], detections["scores"], full_masks,
        class_names), png_path)
    return [dict(result, file_name=file_name) for result in
            evaluation.detections_to_coco_results(image_id, detections, image.shape[:2],
                                                  paste_method)]


def export(model_path, out, export_format, quantize="none", calibration_data=None,
           calibration_images=DEFAULT_CALIBRATION_IMAGES, input_size=None, include_full_masks=False):
    """Write the `.keras` model at `model_path` as a SavedModel folder or a `.tflite` file; returns `out`.

    `export_format` is one of EXPORT_FORMATS. `quantize` (TFLite only) is one of QUANTIZATIONS;
    int8 calibrates on the first `calibration_images` images of `calibration_data` (COCO JSON).
    `input_size` (H, W), multiples of 32, sets another canvas: the weights do not depend on it.
    `include_full_masks` adds in-graph pasted masks to the SavedModel's outputs.
    """
    from keras_maskrcnn import training

    if export_format not in EXPORT_FORMATS:
        raise UserError(f"unknown format {export_format!r}; choose one of {EXPORT_FORMATS}")
    if quantize not in QUANTIZATIONS:
        raise UserError(f"unknown quantization {quantize!r}; choose one of {QUANTIZATIONS}")
    if export_format == "saved_model" and quantize != "none":
        raise UserError("--quantize applies to --format tflite only")
    if export_format == "tflite" and include_full_masks:
        raise UserError("--include-full-masks applies to --format saved_model only; TFLite "
                        "returns box-frame masks, pasted on the host")
    if export_format == "tflite" and not str(out).endswith(".tflite"):
        raise UserError(f"{out}: a TFLite export's file name must end in .tflite")
    if quantize == "int8" and calibration_data is None:
        raise UserError("--quantize int8 needs --calibration-data ANN.json: images on which to "
                        "calibrate the int8 activations")
    if calibration_data is not None and quantize != "int8":
        raise UserError("--calibration-data is used by --quantize int8 only")
    _check_input_size(input_size)
    if not str(model_path).endswith(".keras"):
        raise UserError(f"{model_path}: export reads a .keras model file")
    calibration = None
    if calibration_data is not None:
        with _data_errors():
            dataset = training.open_dataset(calibration_data)
            calibration = [dataset.load_image(image_id)
                           for image_id in dataset.image_ids[:calibration_images]]
    model = _load_keras_model(model_path, input_size)
    directory = os.path.dirname(os.fspath(out))
    if directory:
        os.makedirs(directory, exist_ok=True)
    if export_format == "saved_model":
        from keras_maskrcnn.export.saved_model import export_saved_model
        return export_saved_model(model, out, include_full_masks)
    from keras_maskrcnn.export.tflite import export_tflite
    return export_tflite(model, out, quantize, calibration)


def _check_input_size(input_size):
    """Raise UserError unless `input_size` (H, W) is None or a canvas the model can take."""
    from keras_maskrcnn.config import BACKBONE_STRIDE

    if input_size is not None and any(side % BACKBONE_STRIDE for side in input_size):
        raise UserError(f"--input-size {input_size[0]} {input_size[1]}: both sides must be "
                        f"multiples of {BACKBONE_STRIDE}")


def _load_keras_model(model_path, input_size=None):
    """The `MaskRCNN` of a `.keras` file, rebuilt for canvas `input_size` (H, W) if given."""
    import dataclasses

    from keras_maskrcnn.inference import load_model
    from keras_maskrcnn.model import rebuild

    with _user_errors(FileNotFoundError, ValueError):
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
    with _user_errors(FileNotFoundError, ImportError, ValueError):
        return convert_checkpoint(checkpoint, out, batch_norm_epsilon)


def demo(out_dir, num_train=DEMO_TRAIN_IMAGES, num_val=DEMO_VAL_IMAGES, epochs=None,
         steps_per_epoch=None, batch_size=None, seed=0):
    """Shapes data → tiny model → AP on val → drawn predictions, all under `out_dir`.

    Returns the metrics dict.
    """
    from keras_maskrcnn import training

    data_dir = os.path.join(out_dir, "data")
    run_dir = os.path.join(out_dir, "run")
    train_ann, val_ann = make_shapes(data_dir, num_train, num_val, DEMO_IMAGE_SIZE, seed)
    with _data_errors():
        training.train(train_ann, None, val_ann, None, "tiny", epochs=epochs,
                       steps_per_epoch=steps_per_epoch, batch_size=batch_size, out_dir=run_dir,
                       seed=seed)
    model_path = os.path.join(run_dir, training.MODEL_FILE)
    metrics = evaluate(model_path, val_ann, out=os.path.join(out_dir, "metrics.json"))
    val_set = training.open_dataset(val_ann)
    image_paths = [val_set.image_info(i)["path"] for i in val_set.image_ids[:DEMO_PREDICTED_IMAGES]]
    predict(model_path, image_paths, os.path.join(out_dir, "predictions"))
    return metrics


# Argument parsing.

def _checked(convert, is_valid, requirement):
    """An argparse type: `convert` the text, then refuse values for which `is_valid` is false."""
    def parse(text):
        value = convert(text)
        if not is_valid(value):
            raise argparse.ArgumentTypeError(f"{requirement}, got {value}")
        return value
    # argparse names the type in its "invalid int value" messages.
    parse.__name__ = convert.__name__
    return parse


_positive_int = _checked(int, lambda value: value >= 1, "must be at least 1")
_positive_float = _checked(float, lambda value: value > 0, "must be positive")
_non_negative_int = _checked(int, lambda value: value >= 0, "must not be negative")
_non_negative_float = _checked(float, lambda value: value >= 0, "must not be negative")
_stage_count = _checked(int, lambda value: 0 <= value <= BACKBONE_PARTS,
                        f"must lie in 0..{BACKBONE_PARTS}")
_fraction = _checked(float, lambda value: 0 < value < 1, "must lie strictly between 0 and 1")
# Every preset samples at most a quarter of the RoIs as foreground: 4 leaves the mask head one.
_rois_per_image = _checked(int, lambda value: value >= 4, "must be at least 4")
_probability = _checked(float, lambda value: 0 <= value <= 1, "must lie in [0, 1]")


def _print_metrics(metrics):
    from keras_maskrcnn.evaluation import format_metrics_table
    print(format_metrics_table(metrics))


def _run_make_shapes(args):
    train_ann, val_ann = make_shapes(args.out, args.train, args.val, args.size, args.seed)
    print(f"wrote {train_ann} and {val_ann}")


def _run_train(args):
    from keras_maskrcnn import training
    if args.scale_jitter is not None and args.scale_jitter[0] > args.scale_jitter[1]:
        raise UserError(f"--scale-jitter MIN MAX: MIN {args.scale_jitter[0]} exceeds "
                        f"MAX {args.scale_jitter[1]}")
    if args.eval_every is not None and args.val is None:
        raise UserError("--eval-every needs --val, the set to evaluate on")
    _check_input_size(args.input_size)
    from keras_maskrcnn.data import DataError
    from keras_maskrcnn.finetune import FinetuneError
    with _user_errors(DataError, FinetuneError):
        training.train(args.train, args.train_images, args.val, args.val_images, args.preset,
                       epochs=args.epochs, steps_per_epoch=args.steps_per_epoch,
                       batch_size=args.batch_size, learning_rate=args.learning_rate,
                       out_dir=args.out, seed=args.seed, on_bad_data=args.on_bad_data,
                       check_pixels=args.check_images, scale_jitter=args.scale_jitter,
                       cache=args.cache, eval_every=args.eval_every, optimizer=args.optimizer,
                       warmup_steps=args.warmup_steps, lr_schedule=args.lr_schedule,
                       lr_steps=args.lr_steps, weight_decay=args.weight_decay,
                       clip_norm=args.clip_norm, init_from=args.init_from,
                       input_size=args.input_size, rois_per_image=args.rois_per_image,
                       trainable_stages=0 if args.freeze_backbone else args.trainable_stages,
                       backbone_weights=args.backbone_weights)
    print(f"wrote {os.path.join(args.out, training.MODEL_FILE)} and "
          f"{os.path.join(args.out, training.HISTORY_FILE)}")


def _run_show_data(args):
    written = show_data(args.annotations, args.out, args.images, args.count)
    print(f"drew {len(written)} images to {args.out}")


def _run_evaluate(args):
    _print_metrics(evaluate(args.model, args.data, args.images, args.batch_size, args.out,
                            args.threads))
    if args.out is not None:
        print(f"wrote {args.out}")


def _run_predict(args):
    results = predict(args.model, args.images, args.out, args.score_threshold,
                      num_threads=args.threads)
    print(f"{len(results)} detections in {len(args.images)} images written to {args.out}")


def _run_export(args):
    out = export(args.model, args.out, args.format, args.quantize, args.calibration_data,
                 args.calibration_images, args.input_size, args.include_full_masks)
    print(f"wrote {out}")


def _run_convert_torchvision(args):
    print(f"wrote {convert_torchvision(args.checkpoint, args.out, args.batch_norm_epsilon)}")


def _run_demo(args):
    metrics = demo(args.out, args.train_images_count, args.val_images_count, args.epochs,
                   args.steps_per_epoch, args.batch_size, args.seed)
    print(f"\nDemo outputs are in {args.out}. COCO AP on the validation shapes:")
    _print_metrics(metrics)


def build_parser():
    """The argparse parser of every subcommand."""
    parser = argparse.ArgumentParser(prog=PROG, description="Mask R-CNN instance segmentation "
                                     "on TensorFlow 2 / Keras 3.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    schedule_help = "default: the preset's, see training.PRESET_DEFAULTS"

    shapes = commands.add_parser("make-shapes", help="write the synthetic shapes set",
                                 description="Write OUT/train and OUT/val, each with "
                                 "annotations.json and images/.")
    shapes.add_argument("out", metavar="OUT", help="output folder")
    shapes.add_argument("--train", type=_positive_int, default=DEMO_TRAIN_IMAGES, metavar="N",
                        help="training images (default: %(default)s)")
    shapes.add_argument("--val", type=_positive_int, default=DEMO_VAL_IMAGES, metavar="N",
                        help="validation images (default: %(default)s)")
    shapes.add_argument("--size", type=_positive_int, default=DEMO_IMAGE_SIZE, metavar="PX",
                        help="image side in pixels (default: %(default)s)")
    shapes.add_argument("--seed", type=int, default=0, metavar="S", help="default: %(default)s")
    shapes.set_defaults(run=_run_make_shapes)

    train = commands.add_parser(
        "train", help="train a model on a COCO-format set",
        description="Train a model and write RUN_DIR/model.keras and RUN_DIR/history.json, "
        "with RUN_DIR/checkpoints/ (a model per epoch), RUN_DIR/logs/ (TensorBoard) and "
        "RUN_DIR/bad_data.json. Image paths in an annotation file resolve against its own "
        "folder unless an image folder is given. A run that is stopped (even killed) resumes "
        "from RUN_DIR/backup/ after its last finished epoch when the same command is run again.")
    train.add_argument("--train", required=True, metavar="ANN.json", help="training annotations")
    train.add_argument("--train-images", metavar="DIR", help="training image folder")
    train.add_argument("--val", metavar="ANN.json",
                       help="validation annotations; their losses are reported after each epoch")
    train.add_argument("--val-images", metavar="DIR", help="validation image folder")
    train.add_argument("--preset", required=True, choices=sorted(PRESETS),
                       help="model configuration and schedule defaults (with --init-from, the "
                       "schedule defaults only)")
    train.add_argument("--epochs", type=_positive_int, metavar="E", help=schedule_help)
    train.add_argument("--steps-per-epoch", type=_positive_int, metavar="N", help=schedule_help)
    train.add_argument("--batch-size", type=_positive_int, metavar="B", help=schedule_help)
    train.add_argument("--learning-rate", type=_positive_float, metavar="LR", help=schedule_help)
    train.add_argument("--seed", type=int, default=0, metavar="S", help="default: %(default)s")
    train.add_argument("--out", required=True, metavar="RUN_DIR", help="output folder")
    train.add_argument("--on-bad-data", choices=("skip", "error"), default="skip",
                       help="missing, unreadable or truncated images and invalid annotations: "
                       "leave them out and count them, or stop at the first (default: "
                       "%(default)s; boxes past the image edge are clipped and counted either way)")
    train.add_argument("--check-images", action="store_true",
                       help="decode every image before training, so truncated files are found "
                       "up front (slow on large sets; otherwise they are skipped when met)")
    train.add_argument("--scale-jitter", type=_positive_float, nargs=2, metavar=("MIN", "MAX"),
                       help="scale each training image by a random factor in [MIN, MAX] on top "
                       "of fitting it to the canvas, cropping what overflows (e.g. 0.8 1.25)")
    train.add_argument("--cache", nargs="?", const=True, default=False, metavar="FILE",
                       help="keep decoded training images in memory, or in FILE, after the "
                       "first pass")
    train.add_argument("--eval-every", type=_positive_int, metavar="N",
                       help="COCO AP on --val every N epochs and after the last (history keys "
                       "val_bbox_AP, val_segm_AP, val_bbox_AP50, val_segm_AP50)")
    train.add_argument("--optimizer", choices=("sgd", "adam"),
                       help="SGD with momentum 0.9, or Adam; " + schedule_help)
    train.add_argument("--warmup-steps", type=_non_negative_int, metavar="N",
                       help="steps of linear learning-rate warmup; " + schedule_help)
    train.add_argument("--lr-schedule", choices=("cosine", "step"),
                       help="cosine decay to 0, or ×0.1 at each --lr-steps; " + schedule_help)
    train.add_argument("--lr-steps", type=_fraction, nargs="+", metavar="F",
                       help="fractions of the run after which the step schedule multiplies the "
                       "rate by 0.1; " + schedule_help)
    train.add_argument("--weight-decay", type=_non_negative_float, metavar="WD",
                       help="decoupled weight decay, 0 for none; " + schedule_help)
    train.add_argument("--clip-norm", type=_non_negative_float, metavar="NORM",
                       help="global gradient-norm clip, 0 for none; " + schedule_help)
    train.add_argument("--init-from", metavar="MODEL.keras",
                       help="fine-tune: build the model this trained model's way, with the "
                       "training set's classes, and start from its weights; the class-specific "
                       "predictors (box classes and deltas, mask predictor) start afresh when "
                       "the number of classes differs. What was copied is printed")
    train.add_argument("--input-size", type=_positive_int, nargs=2, metavar=("H", "W"),
                       help="canvas, multiples of 32 (default: the preset's, or the "
                       "--init-from model's)")
    train.add_argument("--rois-per-image", type=_rois_per_image, metavar="N",
                       help="proposals sampled per image to train the box head on, a quarter of "
                       "them at most foreground for the mask head (default: the preset's, or the "
                       "--init-from model's: 512 for r50_fpn, 64 for tiny); fewer train faster, "
                       "the heads' cost grows with N")
    train.add_argument("--backbone-weights", metavar="imagenet|FILE",
                       help="start the backbone from keras.applications' ImageNet weights "
                       "(ResNet50 for keras_imagenet_r50_fpn, MobileNetV3Large for "
                       "mobilenetv3_fpn): 'imagenet' downloads them, or give a weights file")
    freezing = train.add_mutually_exclusive_group()
    freezing.add_argument("--freeze-backbone", action="store_true",
                          help="keep the backbone's weights fixed (--trainable-stages 0)")
    freezing.add_argument("--trainable-stages", type=_stage_count, metavar="N",
                          help="train only the last N of the ResNet's 4 stages, 0 to 5: the stem "
                          "trains only at 5, as with torchvision's trainable_layers (a "
                          "MobileNetV3 backbone takes 0 or 5; default: the whole backbone trains)")
    train.set_defaults(run=_run_train)

    show = commands.add_parser(
        "show-data", help="draw a COCO-format set's ground truth on its images",
        description="Draw masks, boxes and class names of the first N usable images to "
        "OUT/<image id>_<image stem>.png, after the bad-data scan training does (its counts are "
        "printed). Check a converted data set with it before training.")
    show.add_argument("annotations", metavar="ANN.json", help="annotations")
    show.add_argument("--images", metavar="DIR",
                      help="image folder (default: the annotation file's folder)")
    show.add_argument("--count", type=_positive_int, default=DEFAULT_SHOW_COUNT, metavar="N",
                      help="images to draw (default: %(default)s)")
    show.add_argument("--out", required=True, metavar="OUT", help="output folder")
    show.set_defaults(run=_run_show_data)

    evaluate_parser = commands.add_parser(
        "evaluate", help="COCO bbox and segm AP of a model",
        description="Print COCO bbox and segm AP of a model on a COCO-format set.")
    evaluate_parser.add_argument("--model", required=True, metavar="MODEL", help=MODEL_HELP)
    evaluate_parser.add_argument("--data", required=True, metavar="ANN.json", help="annotations")
    evaluate_parser.add_argument("--images", metavar="DIR",
                                 help="image folder (default: the annotation file's folder)")
    evaluate_parser.add_argument("--batch-size", type=_positive_int, default=DEFAULT_BATCH_SIZE,
                                 metavar="B", help="default: %(default)s")
    evaluate_parser.add_argument("--out", metavar="metrics.json",
                                 help='write {"bbox": {...}, "segm": {...}} here')
    evaluate_parser.add_argument("--threads", type=_positive_int, metavar="N", help=THREADS_HELP)
    evaluate_parser.set_defaults(run=_run_evaluate)

    predict_parser = commands.add_parser(
        "predict", help="draw a model's detections on images",
        description="Write DIR/<image stem>.png with masks, boxes and labels drawn, and "
        "DIR/predictions.json in COCO results format with each image's file_name (image_id is "
        "the image's position on the command line, from 1).")
    predict_parser.add_argument("--model", required=True, metavar="MODEL", help=MODEL_HELP)
    predict_parser.add_argument("images", nargs="+", metavar="IMAGE", help="image files")
    predict_parser.add_argument("--out", required=True, metavar="DIR", help="output folder")
    predict_parser.add_argument("--score-threshold", type=_probability,
                                default=DEFAULT_SCORE_THRESHOLD, metavar="T",
                                help="drop detections scoring less (default: %(default)s)")
    predict_parser.add_argument("--threads", type=_positive_int, metavar="N", help=THREADS_HELP)
    predict_parser.set_defaults(run=_run_predict)

    export_parser = commands.add_parser(
        "export", help="write a model as a SavedModel or a .tflite file",
        description="Write a .keras model as a SavedModel folder (TF Serving; signatures "
        "serving_default on encoded images and serve_images on uint8 pixels) or as a .tflite "
        "file (LiteRT, builtin ops only, batch 1, fixed canvas). Both keep the model config, "
        "with class names and category ids, for predict and evaluate.")
    export_parser.add_argument("--model", required=True, metavar="MODEL.keras",
                               help="the trained model")
    export_parser.add_argument("--format", required=True, choices=EXPORT_FORMATS)
    export_parser.add_argument("--quantize", choices=QUANTIZATIONS, default="none",
                               help="TFLite weights (float16, dynamic: int8 weights) or weights "
                               "and activations (int8) (default: %(default)s)")
    export_parser.add_argument("--calibration-data", metavar="ANN.json",
                               help="COCO annotations whose images calibrate int8 activations; "
                               "required by --quantize int8")
    export_parser.add_argument("--calibration-images", type=_positive_int,
                               default=DEFAULT_CALIBRATION_IMAGES, metavar="N",
                               help="calibrate on the first N images (default: %(default)s)")
    export_parser.add_argument("--input-size", type=_positive_int, nargs=2, metavar=("H", "W"),
                               help="canvas to export for, multiples of 32 (default: the "
                               "model's own)")
    export_parser.add_argument("--include-full-masks", action="store_true",
                               help="SavedModel only: also return masks pasted into the image "
                               "(detection_full_masks)")
    export_parser.add_argument("--out", required=True, metavar="PATH",
                               help="SavedModel folder, or .tflite file")
    export_parser.set_defaults(run=_run_export)

    demo_parser = commands.add_parser(
        "demo", help="shapes data, tiny training, evaluation and predictions end to end",
        description="Write the shapes set to OUT/data, train the tiny preset into OUT/run, "
        "evaluate on the validation images (OUT/metrics.json), draw predictions for "
        f"{DEMO_PREDICTED_IMAGES} of them (OUT/predictions/) and print the AP table.")
    demo_parser.add_argument("--out", default=os.path.join("outputs", "demo"), metavar="OUT",
                             help="default: %(default)s")
    demo_parser.add_argument("--train-images-count", type=_positive_int,
                             default=DEMO_TRAIN_IMAGES, metavar="N", help="default: %(default)s")
    demo_parser.add_argument("--val-images-count", type=_positive_int, default=DEMO_VAL_IMAGES,
                             metavar="N", help="default: %(default)s")
    demo_parser.add_argument("--epochs", type=_positive_int, metavar="E", help=schedule_help)
    demo_parser.add_argument("--steps-per-epoch", type=_positive_int, metavar="N",
                             help=schedule_help)
    demo_parser.add_argument("--batch-size", type=_positive_int, metavar="B", help=schedule_help)
    demo_parser.add_argument("--seed", type=int, default=0, metavar="S",
                             help="default: %(default)s")
    demo_parser.set_defaults(run=_run_demo)

    convert_parser = commands.add_parser(
        "convert-torchvision", help="convert torchvision's Mask R-CNN weights to a .keras model",
        description="Read a torchvision maskrcnn_resnet50_fpn checkpoint (its published COCO "
        "file, or torch.save(model.state_dict())) and write a .keras model that reproduces its "
        "inference, with torchvision's COCO labels (category ids 1..90) and class names. "
        "Needs torch: pip install \"keras-maskrcnn[torch]\".")
    convert_parser.add_argument("checkpoint", metavar="CHECKPOINT.pth", help="the state dict")
    convert_parser.add_argument("--out", required=True, metavar="MODEL.keras",
                                help="the converted model")
    convert_parser.add_argument("--batch-norm-epsilon", type=_non_negative_float,
                                default=TORCHVISION_BATCH_NORM_EPSILON, metavar="EPS",
                                help="the ε torchvision ran the checkpoint's batch norms with: 0 "
                                "for its published COCO weights (default), 1e-5 for a model "
                                "built with weights=None")
    convert_parser.set_defaults(run=_run_convert_torchvision)
    return parser


def main(argv=None):
    """Run the command line; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    # TensorFlow's C++ info and warning lines (CPU features, grappler cost notes) drown the
    # progress output; TF_CPP_MIN_LOG_LEVEL=0 brings them back.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        args.run(args)
    # OSErrors (a folder that cannot be created, a full disk) name their file too.
    except (UserError, OSError) as error:
        print(f"{PROG} {args.command}: error: {error}", file=sys.stderr)
        return USER_ERROR_EXIT_CODE
    return 0
