"""Train the tiny Mask R-CNN on synthetic shapes, evaluate it and draw one prediction.

    python examples/train_shapes.py [OUT_DIR]        (default: outputs/train_shapes)

About two minutes on a laptop CPU. So short a schedule leaves AP low; `keras-maskrcnn demo`
trains for longer. Swap in your own COCO-format files for `train_ann` and `val_ann` to train
on real data.
"""

import os
import sys

from keras_maskrcnn import evaluation, postprocess, training, visualize
from keras_maskrcnn.data import CocoDataset, make_shapes
from keras_maskrcnn.inference import load_predictor, predict_in_batches
from keras_maskrcnn.train_config import TrainConfig

NUM_TRAIN, NUM_VAL = 200, 20
EPOCHS, STEPS_PER_EPOCH, BATCH_SIZE = 2, 25, 4
SCORE_THRESHOLD = 0.5


def main(out_dir):
    train_ann, val_ann = make_shapes(os.path.join(out_dir, "data"), NUM_TRAIN, NUM_VAL)
    run_dir = os.path.join(out_dir, "run")
    training.train(TrainConfig(train=train_ann, val=val_ann, preset="tiny", epochs=EPOCHS,
                               steps_per_epoch=STEPS_PER_EPOCH, batch_size=BATCH_SIZE,
                               out=run_dir))

    # Evaluate the saved model, as another process would.
    predictor = load_predictor(os.path.join(run_dir, training.MODEL_FILE))
    val = CocoDataset(val_ann)
    images = [val.load_image(image_id) for image_id in val.image_ids]
    detections = list(predict_in_batches(predictor, images, batch_size=BATCH_SIZE))
    # How masks are pasted back is part of the model (torchvision's way for converted models).
    paste_method = predictor.config.detection.paste_method
    results = []
    for image_id, image, found in zip(val.image_ids, images, detections):
        results += evaluation.detections_to_coco_results(image_id, found, image.shape[:2],
                                                         paste_method)
    print(evaluation.format_metrics_table(evaluation.evaluate_coco(val.coco, results)))

    # Draw the confident detections of the first validation image.
    image, found = images[0], detections[0]
    keep = found["scores"] >= SCORE_THRESHOLD
    boxes = found["boxes"][keep]
    masks = postprocess.paste_masks(found["masks"][keep], boxes, image.shape[:2],
                                    method=paste_method)
    drawn = visualize.draw_detections(image, boxes, found["category_ids"][keep],
                                      found["scores"][keep], masks,
                                      dict(zip(val.category_ids, val.class_names)))
    path = os.path.join(out_dir, "prediction.png")
    visualize.save_png(drawn, path)
    print(f"wrote {path}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else os.path.join("outputs", "train_shapes"))
