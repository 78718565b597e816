"""The `keras-maskrcnn` command line: make-shapes, train, show-data, evaluate, predict, export,
convert-torchvision, demo and serve. Each parses its arguments here and runs a function of `commands`
(train: `training.train`).

TensorFlow is imported inside the commands, so `--help` answers at once. Mistakes a user can
fix (a missing or unreadable file) end with a one-line message naming the file and exit code 2.
"""

import argparse
import json
import os
import sys
import warnings

from keras_maskrcnn import __version__
from keras_maskrcnn.commands import (DEFAULT_BATCH_SIZE, DEFAULT_SCORE_THRESHOLD,
                                     DEFAULT_SHOW_COUNT, DEMO_IMAGE_SIZE, DEMO_PREDICTED_IMAGES,
                                     DEMO_TRAIN_IMAGES, DEMO_VAL_IMAGES, BAD_IMAGE_MODES,
                                     IMAGE_SUFFIXES, SKIPPED_FILE, UserError,
                                     convert_torchvision, demo, evaluate, export, make_shapes,
                                     predict, show_data, user_errors)
from keras_maskrcnn.config import (BACKBONE_NORMS, BACKBONE_PARTS, BOX_NORMALIZERS,
                                   DEFAULT_MAX_IMAGE_PIXELS, INFERENCE_PRECISIONS, PRESETS,
                                   QUANTIZATIONS, TORCHVISION_BATCH_NORM_EPSILON)
from keras_maskrcnn.export_config import (DEFAULT_CALIBRATION_IMAGES, EXPORT_FORMATS,
                                          INT8_CHECK_IMAGES)
from keras_maskrcnn.serving import options as serve_options
from keras_maskrcnn.tf_logging import import_tensorflow_quietly
from keras_maskrcnn.train_config import (BAD_DATA_MODES, DISTRIBUTE_MODES, FLIPS, LR_SCHEDULES,
                                         OPTIMIZERS, PRECISIONS, PRETRAINED_TRAINABLE_STAGES,
                                         WEIGHT_DECAY_MODES)

PROG = "keras-maskrcnn"
USER_ERROR_EXIT_CODE = 2  # argparse's code for bad usage
MODEL_HELP = "a .keras file, a SavedModel folder or a .tflite file"
THREADS_HELP = "LiteRT interpreter threads, for .tflite models (default: 1)"
MAX_IMAGE_PIXELS_HELP = (f"an image whose header claims more pixels (width x height) is bad data, "
                         f"refused before it is decoded (default: {DEFAULT_MAX_IMAGE_PIXELS}, "
                         f"PIL's decompression-bomb limit)")
BAD_DATA_HELP = ("missing, unreadable, truncated or too large images and invalid annotations: "
                 "leave them out and count them, or stop at the first (default: skip; boxes "
                 "past the image edge are clipped and counted either way)")
PRECISION_HELP = ("what a .keras model computes in (default: %(default)s); bfloat16 pays only "
                  "where the CPU's bfloat16 convolutions beat float32 ones, which "
                  "bench/bench_torchvision.py measures")


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
_non_negative_float = _checked(float, lambda value: value >= 0, "must not be negative")
_positive_float = _checked(float, lambda value: value > 0, "must be positive")
_probability = _checked(float, lambda value: 0 <= value <= 1, "must lie in [0, 1]")


def _print_metrics(metrics):
    from keras_maskrcnn.evaluation import format_metrics_table
    print(format_metrics_table(metrics))


# make-shapes' options for harder sets, named as ShapesOptions' fields.
SHAPES_OPTION_FIELDS = ("min_colour_distance", "min_visible_pixels", "min_visible_fraction",
                        "background", "category_ids", "rle_shapes")


def shapes_options(args):
    """make-shapes' arguments → a ShapesOptions: --hard's preset (or the plain set's
    defaults) with the options given on top. Raises UserError naming the option."""
    import dataclasses

    from keras_maskrcnn.data.shapes import HARD, ShapesOptions
    given = {field: getattr(args, field) for field in SHAPES_OPTION_FIELDS
             if getattr(args, field) is not None}
    try:
        return dataclasses.replace(HARD if args.hard else ShapesOptions(), **given)
    except ValueError as error:
        message = str(error)
        for field in SHAPES_OPTION_FIELDS:
            message = message.replace(field, "--" + field.replace("_", "-"))
        raise UserError(message) from error


def _run_make_shapes(args):
    train_ann, val_ann = make_shapes(args.out, args.train, args.val, args.size, args.seed,
                                     shapes_options(args))
    print(f"wrote {train_ann} and {val_ann}")


def _run_train(args):
    from keras_maskrcnn.train_config import TrainConfig, TrainConfigError

    with user_errors(TrainConfigError):
        base = None if args.config is None else TrainConfig.load(args.config)
        config = TrainConfig.from_args(args, base)
    from keras_maskrcnn import training
    from keras_maskrcnn.data import DataError
    from keras_maskrcnn.finetune import FinetuneError
    with user_errors(DataError, FinetuneError, TrainConfigError):
        training.train(config)
    print(f"wrote {os.path.join(config.out, training.MODEL_FILE)} and "
          f"{os.path.join(config.out, training.HISTORY_FILE)}")


def _run_show_data(args):
    written = show_data(args.annotations, args.out, args.images, args.count, args.on_bad_data,
                        args.max_image_pixels)
    print(f"drew {len(written)} images to {args.out}")


def _run_evaluate(args):
    _print_metrics(evaluate(args.model, args.data, args.images, args.batch_size, args.out,
                            args.threads, args.precision, args.on_bad_data,
                            args.max_image_pixels))
    if args.out is not None:
        print(f"wrote {args.out}")


def _run_predict(args):
    run = predict(args.model, args.images, args.out, args.score_threshold,
                  num_threads=args.threads, on_bad_image=args.on_bad_image,
                  precision=args.precision, max_image_pixels=args.max_image_pixels)
    print(f"{len(run.results)} detections in {run.predicted} images written to {args.out}"
          + (f"; {len(run.skipped)} images skipped (listed in "
             f"{os.path.join(args.out, SKIPPED_FILE)})" if run.skipped else ""))


def _run_export(args):
    from keras_maskrcnn.export.tflite import FixedCanvasNotice, Int8AgreementWarning
    from keras_maskrcnn.export_config import ExportConfig, ExportConfigError

    with user_errors(ExportConfigError):
        config = ExportConfig.from_args(args)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("ignore", Int8AgreementWarning)  # the report below says it
        warnings.simplefilter("always", FixedCanvasNotice)
        out = export(config)
    for warning in caught:
        if issubclass(warning.category, FixedCanvasNotice):
            print(f"note: {warning.message}")
        else:
            warnings.warn_explicit(warning.message, warning.category, warning.filename,
                                   warning.lineno)
    if args.quantize == "int8":
        from keras_maskrcnn.export.litert import read_int8_report
        print("\n".join(read_int8_report(out).lines()))
    print(f"wrote {out}")


def _run_convert_torchvision(args):
    print(f"wrote {convert_torchvision(args.checkpoint, args.out, args.batch_norm_epsilon)}")


def _run_serve(args):
    try:
        from keras_maskrcnn.serving.server import serve
        if args.grpc_port is not None:
            from keras_maskrcnn.serving import grpc_service  # noqa: F401 - gRPC's packages
    except ImportError as error:
        raise UserError(f"serve needs Starlette and uvicorn, and --grpc-port grpcio and "
                        f"tensorflow-serving-api ({error}): install the project's [serve] "
                        f"extra, pip install -e \".[serve]\" in its checkout") from error
    options = serve_options.ServeOptions(
        model_name=args.model_name, max_batch_size=args.max_batch_size,
        batch_timeout_ms=args.batch_timeout_ms, max_queue=args.max_queue,
        model_workers=args.model_workers, intra_op_threads=args.intra_op_threads,
        max_body_mb=args.max_body_mb, max_image_pixels=args.max_image_pixels,
        timeout_s=args.timeout_s, api_key=args.api_key, grpc_port=args.grpc_port)
    with user_errors(ValueError):
        serve(args.model, options, args.host, args.port, args.shutdown_timeout)


def _run_demo(args):
    metrics = demo(args.out, args.train_images_count, args.val_images_count, args.epochs,
                   args.steps_per_epoch, args.batch_size, args.seed)
    from keras_maskrcnn import training

    with open(os.path.join(args.out, "run", training.HISTORY_FILE)) as f:
        epoch_seconds = json.load(f)["train_seconds"]
    print(f"\nDemo outputs are in {args.out}. Training took {sum(epoch_seconds):.0f} s "
          f"({len(epoch_seconds)} epochs); COCO AP on the validation shapes:")
    _print_metrics(metrics)


def build_parser():
    """The argparse parser of every subcommand."""
    parser = argparse.ArgumentParser(prog=PROG, description="Mask R-CNN instance segmentation "
                                     "on TensorFlow 2 / Keras 3.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    # Every command takes --verbose, placed after its name.
    verbosity = argparse.ArgumentParser(add_help=False)
    verbosity.add_argument("--verbose", action="store_true", default=False,
                           help="also show TensorFlow's own log lines (as does setting "
                           "TF_CPP_MIN_LOG_LEVEL)")
    schedule_help = "default: the preset's, see train_config.PRESET_SCHEDULES"

    shapes = commands.add_parser("make-shapes", parents=[verbosity], help="write the synthetic shapes set",
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
    from keras_maskrcnn.data.shapes import (BACKGROUNDS, HARD, MAX_COLOUR_DISTANCE, SHAPE_NAMES,
                                            ShapesOptions)
    plain = ShapesOptions()
    hard = shapes.add_argument_group(
        "harder sets", "Each option below overrides the plain set's value (shown) or, with "
        "--hard, the preset's.")
    hard.add_argument("--hard", action="store_true",
                      help=f"the hard preset: --min-colour-distance {HARD.min_colour_distance} "
                      f"--min-visible-fraction {HARD.min_visible_fraction} --background "
                      f"{HARD.background} --category-ids {' '.join(map(str, HARD.category_ids))} "
                      f"--rle-shapes {' '.join(HARD.rle_shapes)}")
    hard.add_argument("--min-colour-distance", type=_checked(
        int, lambda value: 0 <= value <= MAX_COLOUR_DISTANCE, f"must lie in [0, {MAX_COLOUR_DISTANCE}]"),
        metavar="D", help="least sum of absolute RGB differences between a shape's colour and "
        f"the background's; 0 lets them match (plain: {plain.min_colour_distance})")
    hard.add_argument("--min-visible-pixels", type=_positive_int, metavar="N",
                      help="shapes occluded below N visible pixels are left out "
                      f"(plain: {plain.min_visible_pixels})")
    hard.add_argument("--min-visible-fraction", type=_probability, metavar="F",
                      help="...or below this fraction of their unoccluded area "
                      f"(plain: {plain.min_visible_fraction})")
    hard.add_argument("--background", choices=BACKGROUNDS,
                      help="texture: smooth blotches, and camera noise over the whole image "
                      f"(plain: {plain.background})")
    hard.add_argument("--category-ids", type=_positive_int, nargs=len(SHAPE_NAMES),
                      metavar=("SQUARE", "CIRCLE", "TRIANGLE"),
                      help="the categories' ids (plain: "
                      f"{' '.join(map(str, plain.category_ids))})")
    hard.add_argument("--rle-shapes", nargs="*", choices=SHAPE_NAMES, metavar="SHAPE",
                      help=f"shapes ({', '.join(SHAPE_NAMES)}) whose masks are written as RLE, "
                      "the others' as polygons; none given: all polygons (plain: all RLE)")
    shapes.set_defaults(run=_run_make_shapes)

    train = commands.add_parser(
        "train", parents=[verbosity], help="train a model on a COCO-format set",
        # Options not given stay out of the namespace, so --config's values stand.
        argument_default=argparse.SUPPRESS,
        description="Train a model and write RUN_DIR/model.keras and RUN_DIR/history.json, "
        "with RUN_DIR/train_config.json (every setting the run used), RUN_DIR/checkpoints/ (a "
        "model per epoch), RUN_DIR/logs/ (TensorBoard) and RUN_DIR/bad_data.json. Image paths "
        "in an annotation file resolve against its own folder unless an image folder is given. "
        "A run that is stopped (even killed) resumes from RUN_DIR/backup/ after its last "
        "finished epoch when the same command is run again; other settings are refused. "
        "Options are checked by keras_maskrcnn.train_config.TrainConfig, which Python code "
        "passes to keras_maskrcnn.training.train.")
    train.add_argument("--config", default=None, metavar="train_config.json",
                       help="start from the settings of this file (a run's own "
                       "RUN_DIR/train_config.json repeats that run); options given beside it "
                       "replace its values")
    train.add_argument("--train", metavar="ANN.json",
                       help="training annotations (required unless in --config)")
    train.add_argument("--train-images", metavar="DIR", help="training image folder")
    train.add_argument("--val", metavar="ANN.json",
                       help="validation annotations; their losses are reported after each epoch")
    train.add_argument("--val-images", metavar="DIR", help="validation image folder")
    train.add_argument("--preset", metavar="|".join(sorted(PRESETS)),
                       help="model configuration and schedule defaults (with --init-from, the "
                       "schedule defaults only; required unless in --config)")
    train.add_argument("--epochs", type=int, metavar="E", help=schedule_help)
    train.add_argument("--steps-per-epoch", type=int, metavar="N", help=schedule_help)
    train.add_argument("--batch-size", type=int, metavar="B", help=schedule_help)
    train.add_argument("--learning-rate", type=float, metavar="LR", help=schedule_help)
    train.add_argument("--max-instances", type=int, metavar="N",
                       help="ground-truth instances kept per image, the largest; " + schedule_help)
    train.add_argument("--seed", type=int, metavar="S", help="default: 0")
    train.add_argument("--out", metavar="RUN_DIR", help="output folder (default: outputs/run)")
    train.add_argument("--on-bad-data", metavar="|".join(BAD_DATA_MODES), help=BAD_DATA_HELP)
    train.add_argument("--max-image-pixels", type=_positive_int, metavar="N",
                       help=MAX_IMAGE_PIXELS_HELP)
    train.add_argument("--check-images", action="store_true",
                       help="decode every image before training, so truncated files are found "
                       "up front (slow on large sets; otherwise they are skipped when met)")
    train.add_argument("--flips", metavar="|".join(FLIPS),
                       help="training flips: left-right (default) mirrors half the images; all "
                       "also flips up-down and swaps the axes, for data with no up and no "
                       "handedness (aerial, microscope, the shapes set)")
    train.add_argument("--scale-jitter", type=float, nargs=2, metavar=("MIN", "MAX"),
                       help="scale each training image by a random factor in [MIN, MAX] on top "
                       "of fitting it to the canvas, cropping what overflows (e.g. 0.8 1.25)")
    train.add_argument("--cache", nargs="?", const=True, metavar="FILE",
                       help="keep decoded training images in memory, or in FILE, after the "
                       "first pass")
    train.add_argument("--eval-every", type=int, metavar="N",
                       help="COCO AP on --val every N epochs and after the last (history keys "
                       "val_bbox_AP, val_segm_AP, val_bbox_AP50, val_segm_AP50)")
    train.add_argument("--optimizer", metavar="|".join(OPTIMIZERS),
                       help="SGD with momentum 0.9, or Adam; " + schedule_help)
    train.add_argument("--warmup-steps", type=int, metavar="N",
                       help="steps of linear learning-rate warmup; " + schedule_help)
    train.add_argument("--lr-schedule", metavar="|".join(LR_SCHEDULES),
                       help="cosine decay to 0, or ×0.1 at each --lr-steps; " + schedule_help)
    train.add_argument("--lr-steps", type=float, nargs="+", metavar="F",
                       help="fractions of the run after which the step schedule multiplies the "
                       "rate by 0.1; " + schedule_help)
    train.add_argument("--weight-decay", type=float, metavar="WD",
                       help="weight decay, 0 for none; " + schedule_help)
    train.add_argument("--weight-decay-mode", metavar="|".join(WEIGHT_DECAY_MODES),
                       help="coupled: torch's SGD (wd·w joins the gradient before momentum, "
                       "torchvision's recipe); decoupled: w -= lr·wd·w beside the step (Keras', "
                       "AdamW's); " + schedule_help)
    train.add_argument("--clip-norm", type=float, metavar="NORM",
                       help="global gradient-norm clip, 0 for none; " + schedule_help)
    train.add_argument("--init-from", metavar="MODEL.keras",
                       help="fine-tune: build the model this trained model's way, with the "
                       "training set's classes, and start from its weights; the class-specific "
                       "predictors (box classes and deltas, mask predictor) start afresh when "
                       "the number of classes differs. What was copied is printed")
    train.add_argument("--input-size", type=int, nargs=2, metavar=("H", "W"),
                       help="canvas, multiples of 32 (default: the preset's, or the "
                       "--init-from model's)")
    train.add_argument("--rois-per-image", type=int, metavar="N",
                       help="proposals sampled per image to train the box head on, a quarter of "
                       "them at most foreground for the mask head (default: the preset's, or the "
                       "--init-from model's: 512 for r50_fpn, 64 for tiny); fewer train faster, "
                       "the heads' cost grows with N")
    train.add_argument("--backbone-weights", metavar="imagenet|FILE",
                       help="start the backbone from ImageNet weights: keras.applications' "
                       "(ResNet50 for keras_imagenet_r50_fpn, ResNet101 for "
                       "keras_imagenet_r101_fpn, MobileNetV3Large for mobilenetv3_fpn and mobile), which "
                       "'imagenet' downloads, or their weights file; or a torchvision "
                       "resnet50/resnet101 checkpoint (.pth) for r50_fpn/r101_fpn")
    train.add_argument("--backbone-norm", metavar="|".join(BACKBONE_NORMS),
                       help="the backbone's batch norm: frozen_bn (fixed; pretrained backbones) "
                       "or bn (trains; from scratch). Default: the preset's (frozen_bn for the "
                       "ResNet-50/101 and MobileNetV3 presets, which then need "
                       "--backbone-weights or --init-from)")
    train.add_argument("--box-normalizer", metavar="|".join(BOX_NORMALIZERS),
                       help="what the RPN and RoI box losses are divided by: all sampled "
                       "anchors and RoIs (sampled: torchvision's and detectron2's), or the "
                       "foreground ones (positives). Default: the preset's, or the --init-from "
                       "model's")
    train.add_argument("--distribute", metavar="|".join(DISTRIBUTE_MODES),
                       help="none: one device (default); mirrored: every GPU of this machine "
                       "(MirroredStrategy), or --cpu-replicas logical CPU devices; multi-worker: "
                       "the machines the TF_CONFIG environment variable lists "
                       "(MultiWorkerMirroredStrategy; run the same command on each, the chief "
                       "writes RUN_DIR). --batch-size is then the global batch")
    train.add_argument("--cpu-replicas", type=int, metavar="N",
                       help="with --distribute mirrored: split the CPU into N logical devices "
                       "and replicate over them (tests the multi-device path without GPUs)")
    train.add_argument("--precision", metavar="|".join(PRECISIONS),
                       help="what the layers compute in: float32 (default), bfloat16 or float16 "
                       "(Keras mixed precision; float16 with loss scaling). Weights stay float32 "
                       "and so does the saved model")
    train.add_argument("--jit-compile", action="store_true",
                       help="compile the training step with XLA (with --distribute none)")
    freezing = train.add_mutually_exclusive_group()
    freezing.add_argument("--freeze-backbone", dest="trainable_stages", action="store_const",
                          const=0, help="keep the backbone's weights fixed (--trainable-stages 0)")
    freezing.add_argument("--trainable-stages", type=int, metavar="N",
                          help=f"train only the last N of the ResNet's 4 stages, 0 to "
                          f"{BACKBONE_PARTS}: the stem trains only at {BACKBONE_PARTS}, as with "
                          f"torchvision's trainable_layers (a MobileNetV3 backbone takes 0 or "
                          f"{BACKBONE_PARTS}; default: {PRETRAINED_TRAINABLE_STAGES} for a ResNet "
                          f"with frozen batch norm started from pretrained weights, as "
                          f"torchvision, else the whole backbone)")
    train.set_defaults(run=_run_train)

    show = commands.add_parser(
        "show-data", parents=[verbosity], help="draw a COCO-format set's ground truth on its images",
        description="Draw masks, boxes and class names of the first N usable images to "
        "OUT/<image id>_<image stem>.png, after the bad-data scan training does (its counts are "
        "printed). Check a converted data set with it before training.")
    show.add_argument("annotations", metavar="ANN.json", help="annotations")
    show.add_argument("--images", metavar="DIR",
                      help="image folder (default: the annotation file's folder)")
    show.add_argument("--count", type=_positive_int, default=DEFAULT_SHOW_COUNT, metavar="N",
                      help="images to draw (default: %(default)s)")
    show.add_argument("--out", required=True, metavar="OUT", help="output folder")
    show.add_argument("--on-bad-data", choices=BAD_DATA_MODES, default="skip", help=BAD_DATA_HELP)
    show.add_argument("--max-image-pixels", type=_positive_int, default=DEFAULT_MAX_IMAGE_PIXELS,
                      metavar="N", help=MAX_IMAGE_PIXELS_HELP)
    show.set_defaults(run=_run_show_data)

    evaluate_parser = commands.add_parser(
        "evaluate", parents=[verbosity], help="COCO bbox and segm AP of a model",
        description="Print COCO bbox and segm AP of a model on a COCO-format set.")
    evaluate_parser.add_argument("--model", required=True, metavar="MODEL", help=MODEL_HELP)
    evaluate_parser.add_argument("--data", required=True, metavar="ANN.json", help="annotations")
    evaluate_parser.add_argument("--images", metavar="DIR",
                                 help="image folder (default: the annotation file's folder)")
    evaluate_parser.add_argument("--batch-size", type=_positive_int, default=DEFAULT_BATCH_SIZE,
                                 metavar="B", help="default: %(default)s")
    evaluate_parser.add_argument("--out", metavar="metrics.json",
                                 help='write {"bbox": {...}, "segm": {...}} here, with '
                                 '"images_evaluated", "images_skipped" and "bad_data" (what '
                                 'was left out of the ground truth and the AP, and why)')
    evaluate_parser.add_argument("--on-bad-data", choices=BAD_DATA_MODES, default="skip",
                                 help=BAD_DATA_HELP + "; skipped images are left out of the AP")
    evaluate_parser.add_argument("--max-image-pixels", type=_positive_int,
                                 default=DEFAULT_MAX_IMAGE_PIXELS, metavar="N",
                                 help=MAX_IMAGE_PIXELS_HELP)
    evaluate_parser.add_argument("--threads", type=_positive_int, metavar="N", help=THREADS_HELP)
    evaluate_parser.add_argument("--precision", choices=INFERENCE_PRECISIONS, default="float32",
                                 help=PRECISION_HELP)
    evaluate_parser.set_defaults(run=_run_evaluate)

    predict_parser = commands.add_parser(
        "predict", parents=[verbosity], help="draw a model's detections on images",
        description="Write DIR/<image stem>.png with masks, boxes and labels drawn, and "
        "DIR/predictions.json in COCO results format with each image's file_name (image_id is "
        "the image's position among the files, from 1), and DIR/skipped.json listing images "
        "that could not be read.")
    predict_parser.add_argument("--model", required=True, metavar="MODEL", help=MODEL_HELP)
    predict_parser.add_argument("images", nargs="+", metavar="IMAGE|DIR",
                                help="image files, or folders whose image files ("
                                + " ".join(IMAGE_SUFFIXES) + ") are all read, sorted by name")
    predict_parser.add_argument("--on-bad-image", choices=BAD_IMAGE_MODES, default="skip",
                                help="a missing, unreadable, truncated or too large image: "
                                "report it, skip it and go on, or stop (default: %(default)s)")
    predict_parser.add_argument("--max-image-pixels", type=_positive_int,
                                default=DEFAULT_MAX_IMAGE_PIXELS, metavar="N",
                                help=MAX_IMAGE_PIXELS_HELP)
    predict_parser.add_argument("--out", required=True, metavar="DIR", help="output folder")
    predict_parser.add_argument("--score-threshold", type=_probability,
                                default=DEFAULT_SCORE_THRESHOLD, metavar="T",
                                help="drop detections scoring less (default: %(default)s)")
    predict_parser.add_argument("--threads", type=_positive_int, metavar="N", help=THREADS_HELP)
    predict_parser.add_argument("--precision", choices=INFERENCE_PRECISIONS, default="float32",
                                help=PRECISION_HELP)
    predict_parser.set_defaults(run=_run_predict)

    export_parser = commands.add_parser(
        "export", parents=[verbosity], help="write a model as a SavedModel or a .tflite file",
        description="Write a .keras model as a SavedModel folder (TF Serving; signatures "
        "serving_default on encoded images and serve_images on uint8 pixels) or as a .tflite "
        "file (LiteRT, builtin ops only, batch 1, fixed canvas). Both keep the model config, "
        "with class names and category ids, for predict and evaluate. Options are checked by "
        "keras_maskrcnn.export_config.ExportConfig, which Python code passes to "
        "keras_maskrcnn.commands.export (docs/export.md).")
    export_parser.add_argument("--model", required=True, metavar="MODEL.keras",
                               help="the trained model")
    export_parser.add_argument("--format", required=True, metavar="|".join(EXPORT_FORMATS))
    export_parser.add_argument("--quantize", metavar="|".join(QUANTIZATIONS), default="none",
                               help="TFLite weights (float16, dynamic: int8 weights) or weights "
                               "and activations (int8) (default: %(default)s)")
    export_parser.add_argument("--calibration-data", metavar="ANN.json",
                               help="COCO annotations whose images calibrate int8 activations; "
                               "required by --quantize int8")
    export_parser.add_argument("--calibration-images", type=int,
                               default=DEFAULT_CALIBRATION_IMAGES, metavar="N",
                               help="calibrate on the first N images and compare int8 with "
                               f"float32 on the next {INT8_CHECK_IMAGES} (default: %(default)s)")
    export_parser.add_argument("--input-size", type=int, nargs=2, metavar=("H", "W"),
                               help="canvas to export for, multiples of 32 (default: the "
                               "model's own)")
    export_parser.add_argument("--camera-size", type=int, nargs=2, metavar=("H", "W"),
                               help="TFLite only: the file takes uint8 camera frames of this "
                               "size (any aspect) and resizes and pads them itself; boxes come "
                               "back in the frame's pixels (examples/run_phone_model.py)")
    export_parser.add_argument("--precision", metavar="|".join(INFERENCE_PRECISIONS),
                               default="float32",
                               help="SavedModel only: what its graph computes in; outputs stay "
                               "float32 (default: %(default)s). Export says whether this CPU's "
                               "bfloat16 convolutions beat float32 ones")
    export_parser.add_argument("--include-full-masks", action="store_true",
                               help="SavedModel only: also return masks pasted into the image "
                               "(detection_full_masks)")
    export_parser.add_argument("--out", required=True, metavar="PATH",
                               help="SavedModel folder, or .tflite file")
    export_parser.set_defaults(run=_run_export)

    demo_parser = commands.add_parser(
        "demo", parents=[verbosity], help="shapes data, tiny training, evaluation and predictions end to end",
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
        "convert-torchvision", parents=[verbosity], help="convert torchvision's Mask R-CNN weights to a .keras model",
        description="Read a torchvision maskrcnn_resnet50_fpn checkpoint (its published COCO "
        "file, or torch.save(model.state_dict())) and write a .keras model that reproduces its "
        "inference, with torchvision's COCO labels (category ids 1..90) and class names. "
        "Needs torch and torchvision: the project's [torch] extra, pip install -e \".[torch]\" "
        "in its checkout.")
    convert_parser.add_argument("checkpoint", metavar="CHECKPOINT.pth", help="the state dict")
    convert_parser.add_argument("--out", required=True, metavar="MODEL.keras",
                                help="the converted model")
    convert_parser.add_argument("--batch-norm-epsilon", type=_non_negative_float,
                                default=TORCHVISION_BATCH_NORM_EPSILON, metavar="EPS",
                                help="the ε torchvision ran the checkpoint's batch norms with: 0 "
                                "for its published COCO weights (default), 1e-5 for a model "
                                "built with weights=None")
    convert_parser.set_defaults(run=_run_convert_torchvision)
    _add_serve_parser(commands, verbosity)
    return parser


def _add_serve_parser(commands, verbosity):
    """`serve`'s options; their defaults are the serving package's (imported lazily)."""
    serve_parser = commands.add_parser(
        "serve", parents=[verbosity], help="serve a SavedModel over TF Serving's REST API",
        description="Serve an exported SavedModel (keras-maskrcnn export --format saved_model) "
        "over TF Serving's REST API (GET /v1/models/NAME, .../metadata, POST ...:predict), "
        "plus POST /v1/models/NAME:detect (the image file as the body; detections with masks "
        "pasted at the image's size), GET /metrics (Prometheus) and a browser page at /. "
        "Concurrent requests are batched into one model call. SIGTERM stops accepting, "
        "finishes the requests in flight and exits 0. See docs/serving.md. Needs the [serve] "
        "extra.")
    serve_parser.add_argument("model", metavar="MODEL", help="a SavedModel folder, or a folder "
                              "of numbered versions of one (NAME/1, NAME/2: the highest is "
                              "served)")
    serve_parser.add_argument("--model-name", required=True, metavar="NAME",
                              help="the name in the URLs, /v1/models/NAME")
    serve_parser.add_argument("--host", default=serve_options.DEFAULT_HOST,
                              help="address to listen on (default: %(default)s, this machine "
                              "only)")
    serve_parser.add_argument("--port", type=int, default=serve_options.DEFAULT_PORT,
                              help="default: %(default)s, TF Serving's REST port")
    serve_parser.add_argument("--max-batch-size", type=_positive_int,
                              default=serve_options.DEFAULT_MAX_BATCH_SIZE, metavar="B",
                              help="requests joined into one model call at most "
                              "(default: %(default)s)")
    serve_parser.add_argument("--batch-timeout-ms", type=_non_negative_float,
                              default=serve_options.DEFAULT_BATCH_TIMEOUT_MS, metavar="MS",
                              help="how long a model call waits for its batch to fill; 0 runs "
                              "what is queued as soon as the model is free (default: %(default)s)")
    serve_parser.add_argument("--max-queue", type=_positive_int,
                              default=serve_options.DEFAULT_MAX_QUEUE, metavar="N",
                              help="requests waiting for the model at most; more "
                              "are answered 503 with Retry-After (default: %(default)s)")
    serve_parser.add_argument("--model-workers", type=_positive_int,
                              default=serve_options.DEFAULT_MODEL_WORKERS, metavar="N",
                              help="model calls run at once, each on a thread of its own "
                              "(default: %(default)s; docs/serving.md: 2 with "
                              "--intra-op-threads 1 served a small model faster on 2 cores)")
    serve_parser.add_argument("--intra-op-threads", type=_positive_int, metavar="N",
                              help="threads TensorFlow may use for one op (TF Serving's "
                              "--tensorflow_intra_op_parallelism; default: one per core)")
    serve_parser.add_argument("--max-body-mb", type=_positive_float,
                              default=serve_options.DEFAULT_MAX_BODY_MB, metavar="MB",
                              help="larger request bodies are answered 413 "
                              "(default: %(default)s)")
    serve_parser.add_argument("--max-image-pixels", type=_positive_int,
                              default=DEFAULT_MAX_IMAGE_PIXELS, metavar="N",
                              help="an image (a :detect body, a :predict b64 input) whose "
                              "header claims more pixels is answered 400 before it is decoded "
                              "(default: %(default)s, PIL's decompression-bomb limit)")
    serve_parser.add_argument("--timeout-s", type=_positive_float,
                              default=serve_options.DEFAULT_TIMEOUT_S, metavar="S",
                              help="requests not answered within S seconds get "
                              "504 (default: %(default)s)")
    serve_parser.add_argument("--shutdown-timeout", type=_non_negative_float,
                              default=serve_options.DEFAULT_SHUTDOWN_TIMEOUT_S, metavar="S",
                              help="on SIGTERM, how long requests in flight may still take "
                              "(default: %(default)s)")
    serve_parser.add_argument("--api-key", metavar="KEY",
                              help="require 'Authorization: Bearer KEY' on every endpoint but "
                              "the model status and the page")
    serve_parser.add_argument("--grpc-port", type=_positive_int, metavar="PORT",
                              help="also serve TF Serving's gRPC API (Predict, "
                              "GetModelMetadata) on this port, e.g. 8500 as TF Serving does")
    serve_parser.set_defaults(run=_run_serve)


def main(argv=None):
    """Run the command line; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.verbose:
        # TensorFlow's C++ start-up lines and CUDA probes drown our progress output.
        import_tensorflow_quietly()
    try:
        args.run(args)
    # OSErrors (a folder that cannot be created, a full disk) name their file too.
    except (UserError, OSError) as error:
        print(f"{PROG} {args.command}: error: {error}", file=sys.stderr)
        return USER_ERROR_EXIT_CODE
    return 0
