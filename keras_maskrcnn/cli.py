"""The `keras-maskrcnn` command line: make-shapes, train, evaluate, predict and demo.

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


def _load_predictor(model_path):
    from keras_maskrcnn.inference import load_predictor
    with _user_errors(FileNotFoundError, ValueError):
        return load_predictor(model_path)


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


def evaluate(model_path, annotation_file, image_dir=None, batch_size=DEFAULT_BATCH_SIZE, out=None):
    """COCO bbox and segm AP of a saved model on a COCO-format set; writes `out` if given.

    Returns {"bbox": {...}, "segm": {...}} as `evaluation.evaluate_coco` does.
    """
    from tqdm import tqdm

    from keras_maskrcnn import evaluation, training
    from keras_maskrcnn.inference import predict_in_batches

    with _data_errors():
        dataset = training.open_dataset(annotation_file, image_dir)
        predictor = _load_predictor(model_path)
        images = (dataset.load_image(image_id) for image_id in dataset.image_ids)
        results = []
        with tqdm(total=len(dataset.image_ids), desc="evaluate", unit="image") as progress:
            detections = predict_in_batches(predictor, images, batch_size, progress.update)
            for image_id, found in zip(dataset.image_ids, detections):
                # load_image has checked that the pixels have the annotated size.
                info = dataset.image_info(image_id)
                results.extend(evaluation.detections_to_coco_results(
                    image_id, found, (info["height"], info["width"])))
    metrics = evaluation.evaluate_coco(dataset.coco, results, image_ids=dataset.image_ids)
    if out is not None:
        _write_json(metrics, out)
    return metrics


def predict(model_path, image_paths, out_dir, score_threshold=DEFAULT_SCORE_THRESHOLD,
            batch_size=DEFAULT_BATCH_SIZE):
    """Draw detections scoring at least `score_threshold` on each image and save them as results.

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
    predictor = _load_predictor(model_path)
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
                                                  image_paths[index], index + 1))
            progress.update(len(images))
    _write_json(results, os.path.join(out_dir, "predictions.json"))
    return results


def _draw_and_describe(image, detections, class_names, png_path, file_name, image_id):
    """Save one image with its detections drawn; returns its COCO results with `file_name`."""
    from keras_maskrcnn import evaluation, postprocess, visualize

    full_masks = postprocess.paste_masks(detections["masks"], detections["boxes"], image.shape[:2])
    visualize.save_png(visualize.draw_detections(
        image, detections["boxes"], detections["category_ids"], detections["scores"], full_masks,
        class_names), png_path)
    return [dict(result, file_name=file_name) for result in
            evaluation.detections_to_coco_results(image_id, detections, image.shape[:2])]


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

def _positive_int(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _positive_float(text):
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {value}")
    return value


def _probability(text):
    value = float(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must lie in [0, 1], got {value}")
    return value


def _print_metrics(metrics):
    from keras_maskrcnn.evaluation import format_metrics_table
    print(format_metrics_table(metrics))


def _run_make_shapes(args):
    train_ann, val_ann = make_shapes(args.out, args.train, args.val, args.size, args.seed)
    print(f"wrote {train_ann} and {val_ann}")


def _run_train(args):
    from keras_maskrcnn import training
    with _data_errors():
        training.train(args.train, args.train_images, args.val, args.val_images, args.preset,
                       epochs=args.epochs, steps_per_epoch=args.steps_per_epoch,
                       batch_size=args.batch_size, learning_rate=args.learning_rate,
                       out_dir=args.out, seed=args.seed)
    print(f"wrote {os.path.join(args.out, training.MODEL_FILE)} and "
          f"{os.path.join(args.out, training.HISTORY_FILE)}")


def _run_evaluate(args):
    _print_metrics(evaluate(args.model, args.data, args.images, args.batch_size, args.out))
    if args.out is not None:
        print(f"wrote {args.out}")


def _run_predict(args):
    results = predict(args.model, args.images, args.out, args.score_threshold)
    print(f"{len(results)} detections in {len(args.images)} images written to {args.out}")


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

    train = commands.add_parser("train", help="train a model on a COCO-format set",
                                description="Train a model and write RUN_DIR/model.keras and "
                                "RUN_DIR/history.json. Image paths in an annotation file resolve "
                                "against its own folder unless an image folder is given.")
    train.add_argument("--train", required=True, metavar="ANN.json", help="training annotations")
    train.add_argument("--train-images", metavar="DIR", help="training image folder")
    train.add_argument("--val", metavar="ANN.json",
                       help="validation annotations; their losses are reported after each epoch")
    train.add_argument("--val-images", metavar="DIR", help="validation image folder")
    train.add_argument("--preset", required=True, choices=sorted(PRESETS),
                       help="model configuration")
    train.add_argument("--epochs", type=_positive_int, metavar="E", help=schedule_help)
    train.add_argument("--steps-per-epoch", type=_positive_int, metavar="N", help=schedule_help)
    train.add_argument("--batch-size", type=_positive_int, metavar="B", help=schedule_help)
    train.add_argument("--learning-rate", type=_positive_float, metavar="LR", help=schedule_help)
    train.add_argument("--seed", type=int, default=0, metavar="S", help="default: %(default)s")
    train.add_argument("--out", required=True, metavar="RUN_DIR", help="output folder")
    train.set_defaults(run=_run_train)

    evaluate_parser = commands.add_parser(
        "evaluate", help="COCO bbox and segm AP of a model",
        description="Print COCO bbox and segm AP of a model on a COCO-format set.")
    evaluate_parser.add_argument("--model", required=True, metavar="MODEL", help="a .keras file")
    evaluate_parser.add_argument("--data", required=True, metavar="ANN.json", help="annotations")
    evaluate_parser.add_argument("--images", metavar="DIR",
                                 help="image folder (default: the annotation file's folder)")
    evaluate_parser.add_argument("--batch-size", type=_positive_int, default=DEFAULT_BATCH_SIZE,
                                 metavar="B", help="default: %(default)s")
    evaluate_parser.add_argument("--out", metavar="metrics.json",
                                 help='write {"bbox": {...}, "segm": {...}} here')
    evaluate_parser.set_defaults(run=_run_evaluate)

    predict_parser = commands.add_parser(
        "predict", help="draw a model's detections on images",
        description="Write DIR/<image stem>.png with masks, boxes and labels drawn, and "
        "DIR/predictions.json in COCO results format with each image's file_name (image_id is "
        "the image's position on the command line, from 1).")
    predict_parser.add_argument("--model", required=True, metavar="MODEL", help="a .keras file")
    predict_parser.add_argument("images", nargs="+", metavar="IMAGE", help="image files")
    predict_parser.add_argument("--out", required=True, metavar="DIR", help="output folder")
    predict_parser.add_argument("--score-threshold", type=_probability,
                                default=DEFAULT_SCORE_THRESHOLD, metavar="T",
                                help="drop detections scoring less (default: %(default)s)")
    predict_parser.set_defaults(run=_run_predict)

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
