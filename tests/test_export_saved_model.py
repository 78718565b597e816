"""SavedModel export: both signatures, loaded in a fresh process, give the Keras model's detections."""

import dataclasses
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import reference_paste
import tensorflow as tf

from keras_maskrcnn import preprocessing
from keras_maskrcnn.export.saved_model import export_saved_model
from keras_maskrcnn.model import rebuild

pytestmark = pytest.mark.slow  # builds, converts or trains models: see pytest.ini

# Runs in a fresh process so that nothing of the exporting process (Python classes, traced
# functions) can stand in for what the SavedModel itself holds.
LOAD_AND_RUN = textwrap.dedent("""
    import sys
    import numpy as np
    import tensorflow as tf
    model_dir, images_path, outputs_path, *encoded_paths = sys.argv[1:]
    images = np.load(images_path)
    encoded = tf.stack([tf.io.read_file(path) for path in encoded_paths])
    loaded = tf.saved_model.load(model_dir)
    results = {}
    for name, value in loaded.signatures["serve_images"](images=tf.constant(images)).items():
        results["serve_images/" + name] = value.numpy()
    for name, value in loaded.signatures["serving_default"](images=encoded).items():
        results["serving_default/" + name] = value.numpy()
    np.savez(outputs_path, **results)
""")
CONTRACT = ("detection_boxes", "detection_scores", "detection_classes", "num_detections",
            "detection_masks")


def _image(height, width, background, colour, top, left, seed):
    """A noisy uint8 [height, width, 3] image with one rectangle."""
    rng = np.random.default_rng(seed)
    image = np.clip(rng.normal(background, 12, (height, width, 3)), 0, 255).astype(np.uint8)
    image[top:top + height // 2, left:left + width // 3] = colour
    return image


# A canvas per image: the 96 × 160 images stay as they are and the 200 × 120 one becomes
# 160 × 96, so a batch of both runs on a 160 × 160 canvas that is not the 128 × 128 one.
PER_IMAGE_SIZE_LIMITS = (96, 160)


@pytest.fixture(scope="module", params=["fixed canvas", "canvas per image"])
def exported(request, tmp_path_factory, untrained_tiny_model):
    """A random-init tiny model (with its fixed canvas, or rebuilt with size limits for a canvas
    per image), exported once, and its signatures' outputs from a fresh process."""
    model = untrained_tiny_model
    if request.param == "canvas per image":
        config = model.model_config
        model = rebuild(model, config.replace(input=dataclasses.replace(
            config.input, size_limits=PER_IMAGE_SIZE_LIMITS)))
    root = tmp_path_factory.mktemp("saved_model")
    export_saved_model(model, root / "model", include_full_masks=True)
    same_size = [_image(96, 160, 60, (200, 40, 40), 10, 20, 1), _image(96, 160, 150, (30, 30, 220), 40, 90, 2)]
    # Encoded images of different sizes: a lossless PNG and a JPEG.
    encoded_images = [_image(200, 120, 90, (20, 200, 60), 50, 30, 3), same_size[0]]
    encoded = [tf.io.encode_png(encoded_images[0]).numpy(), tf.io.encode_jpeg(encoded_images[1]).numpy()]
    np.save(root / "images.npy", np.stack(same_size))
    encoded_paths = [root / "image0.png", root / "image1.jpg"]
    for path, data in zip(encoded_paths, encoded):
        path.write_bytes(data)
    subprocess.run([sys.executable, "-c", LOAD_AND_RUN, str(root / "model"), str(root / "images.npy"),
                    str(root / "outputs.npz"), *map(str, encoded_paths)], check=True)
    with np.load(root / "outputs.npz") as outputs:
        results = dict(outputs)
    # The Keras model sees what the graph decodes: the same decoder, run on the host.
    decoded = [tf.io.decode_image(data, channels=3, expand_animations=False).numpy() for data in encoded]
    return model, {"serve_images": same_size, "serving_default": decoded}, results


def _keras_outputs(model, images):
    canvases, image_info = preprocessing.preprocess_for_model(images, model.model_config.input)
    return {name: np.asarray(value)
            for name, value in model({"images": canvases, "image_info": image_info}).items()}


@pytest.mark.parametrize("signature", ["serve_images", "serving_default"])
def test_signature_gives_the_keras_detections(exported, signature):
    model, inputs, results = exported
    want = _keras_outputs(model, inputs[signature])
    got = {name: results[f"{signature}/{name}"] for name in CONTRACT}
    assert want["num_detections"].min() > 0, "the test model should detect something"
    np.testing.assert_array_equal(got["num_detections"], want["num_detections"])
    np.testing.assert_array_equal(got["detection_classes"], want["detection_classes"])
    np.testing.assert_allclose(got["detection_boxes"], want["detection_boxes"], atol=0.5)
    np.testing.assert_allclose(got["detection_scores"], want["detection_scores"], atol=1e-4)
    np.testing.assert_allclose(got["detection_masks"], want["detection_masks"], atol=1e-4)
    assert set(np.unique(got["detection_classes"])) <= {0, 3, 7}


@pytest.mark.parametrize("signature", ["serve_images", "serving_default"])
def test_full_masks_equal_host_pasting(exported, signature):
    _, inputs, results = exported
    full_masks = results[f"{signature}/detection_full_masks"]
    largest = np.max([image.shape[:2] for image in inputs[signature]], axis=0)
    assert full_masks.shape[2:] == tuple(largest) and full_masks.dtype == np.uint8
    for index, image in enumerate(inputs[signature]):
        height, width = image.shape[:2]
        want = reference_paste.paste_masks(results[f"{signature}/detection_masks"][index],
                                           results[f"{signature}/detection_boxes"][index], (height, width))
        got = full_masks[index, :, :height, :width] > 0
        # float32 in the graph against float64 on the host: a pixel may flip at exactly 0.5.
        assert np.count_nonzero(got != want) <= 2
        assert not full_masks[index, :, height:].any() and not full_masks[index, :, :, width:].any()


def test_bfloat16_saved_model_computes_in_bfloat16_and_detects_as_float32(
        untrained_tiny_model, tiny_saved_model, tmp_path, capsys):
    """`export --precision bfloat16`: every convolution of the graph runs in bfloat16, the
    outputs stay float32, and the detections are float32's. Measured on these 3 images (20
    detections each): 95-100 % found again (IoU ≥ 0.5, same class; random weights score
    near-ties), top-5 scores within 0.013, matched boxes within 0.09 px, mask probabilities
    within 0.05; the bounds below are about 2× those."""
    from reference_boxes import pairwise_iou

    from keras_maskrcnn import commands
    from keras_maskrcnn.export.saved_model import SavedModelPredictor
    from keras_maskrcnn.export_config import ExportConfig

    untrained_tiny_model.save(tmp_path / "model.keras")
    commands.export(ExportConfig(model=str(tmp_path / "model.keras"), format="saved_model",
                                 out=str(tmp_path / "bfloat16"), precision="bfloat16"))
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].startswith("precision: bfloat16") and "GFLOP/s" in printed[0]

    loaded = tf.saved_model.load(str(tmp_path / "bfloat16"))
    signature = loaded.signatures["serve_images"]
    convolutions = [node for function in signature.graph.as_graph_def().library.function
                    for node in function.node_def if node.op == "Conv2D"]
    assert convolutions and {node.attr["T"].type for node in convolutions} == {tf.bfloat16.as_datatype_enum}
    images = [_image(96, 160, 90, (200, 40, 40), 10, 20, 1),
              _image(128, 100, 90, (30, 30, 220), 40, 30, 2),
              _image(120, 120, 150, (20, 200, 60), 30, 40, 3)]
    outputs = signature(images=tf.constant(images[0][None]))
    assert {name: value.dtype for name, value in outputs.items()
            if name != "detection_classes" and name != "num_detections"} == {
        name: tf.float32 for name in ("detection_boxes", "detection_scores", "detection_masks")}

    # The float32 export of the same model, shared with the serving tests.
    want = SavedModelPredictor(str(tiny_saved_model / "1")).predict(images)
    got = SavedModelPredictor(str(tmp_path / "bfloat16")).predict(images)
    for w, g in zip(want, got):
        iou = pairwise_iou(w["boxes"], g["boxes"])
        same = (iou >= 0.5) & (w["category_ids"][:, None] == g["category_ids"][None])
        assert len(w["scores"]) > 0 and same.any(axis=1).mean() >= 0.9
        np.testing.assert_allclose(np.sort(g["scores"])[::-1][:5], np.sort(w["scores"])[::-1][:5],
                                   atol=0.03)
        rows, cols = np.nonzero(same & (iou == iou.max(axis=1, keepdims=True)))
        np.testing.assert_allclose(g["boxes"][cols], w["boxes"][rows], atol=0.5)
        np.testing.assert_allclose(g["masks"][cols], w["masks"][rows], atol=0.1)
