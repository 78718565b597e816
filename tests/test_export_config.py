"""`ExportConfig`: one place for the export's rules, the same messages from Python and the CLI."""

import pytest

from keras_maskrcnn import commands
from keras_maskrcnn.export_config import ExportConfig, ExportConfigError

# Each: the CLI's options past `export --model M.keras`, the same settings as fields, and what
# the message must say.
PROBLEMS = {
    "unknown format": (["--format", "onnx", "--out", "m.onnx"], {"format": "onnx", "out": "m.onnx"},
                       "format (--format): unknown value 'onnx'"),
    "unknown quantization": (["--format", "tflite", "--quantize", "int4", "--out", "m.tflite"],
                             {"format": "tflite", "quantize": "int4", "out": "m.tflite"},
                             "quantize (--quantize): unknown value 'int4'"),
    "quantized saved model": (["--format", "saved_model", "--quantize", "float16", "--out", "sm"],
                              {"format": "saved_model", "quantize": "float16", "out": "sm"},
                              "quantize (--quantize) applies to format (--format) tflite only"),
    "int8 without calibration": (
        ["--format", "tflite", "--quantize", "int8", "--out", "m.tflite"],
        {"format": "tflite", "quantize": "int8", "out": "m.tflite"},
        "quantize (--quantize) int8 needs calibration_data (--calibration-data)"),
    "calibration without int8": (
        ["--format", "tflite", "--calibration-data", "a.json", "--out", "m.tflite"],
        {"format": "tflite", "calibration_data": "a.json", "out": "m.tflite"},
        "calibration_data (--calibration-data) is used by quantize (--quantize) int8 only"),
    "input size": (["--format", "tflite", "--input-size", "100", "96", "--out", "m.tflite"],
                   {"format": "tflite", "input_size": (100, 96), "out": "m.tflite"},
                   "input_size (--input-size) must be H W, both positive multiples of 32"),
    "camera size": (["--format", "tflite", "--camera-size", "0", "640", "--out", "m.tflite"],
                    {"format": "tflite", "camera_size": (0, 640), "out": "m.tflite"},
                    "camera_size (--camera-size) must be H W, both positive"),
    "camera size of a saved model": (
        ["--format", "saved_model", "--camera-size", "480", "640", "--out", "sm"],
        {"format": "saved_model", "camera_size": (480, 640), "out": "sm"},
        "camera_size (--camera-size) applies to format (--format) tflite only"),
    "tflite suffix": (["--format", "tflite", "--out", "m.bin"], {"format": "tflite", "out": "m.bin"},
                      "out (--out) m.bin: a TFLite export's file name must end in .tflite"),
    "bfloat16 tflite": (["--format", "tflite", "--precision", "bfloat16", "--out", "m.tflite"],
                        {"format": "tflite", "precision": "bfloat16", "out": "m.tflite"},
                        "precision (--precision) applies to format (--format) saved_model only"),
    "full masks in tflite": (["--format", "tflite", "--include-full-masks", "--out", "m.tflite"],
                             {"format": "tflite", "include_full_masks": True, "out": "m.tflite"},
                             "include_full_masks (--include-full-masks) applies to format "
                             "(--format) saved_model only"),
    "calibration count": (["--format", "tflite", "--calibration-images", "0", "--out", "m.tflite"],
                          {"format": "tflite", "calibration_images": 0, "out": "m.tflite"},
                          "calibration_images (--calibration-images) must be a whole number of "
                          "at least 1"),
}


@pytest.mark.parametrize("problem", sorted(PROBLEMS))
def test_python_and_cli_give_the_same_message(problem, run_cli):
    argv, fields, expected = PROBLEMS[problem]
    with pytest.raises(ExportConfigError) as raised:
        ExportConfig(model="m.keras", **fields)
    message = str(raised.value)
    assert expected in message
    code, _, err = run_cli("export", "--model", "m.keras", *argv)
    assert code == 2
    assert err == f"keras-maskrcnn export: error: {message}\n"


def test_model_must_be_a_keras_file():
    with pytest.raises(ExportConfigError, match=r"model \(--model\) m.h5: export reads a .keras"):
        ExportConfig(model="m.h5", out="sm", format="saved_model")


def test_lists_become_tuples_and_defaults_pass():
    config = ExportConfig(model="m.keras", out="m.tflite", format="tflite", input_size=[64, 96],
                          camera_size=[480, 640])
    assert config.input_size == (64, 96) and config.camera_size == (480, 640)
    assert config.precision == "float32" and config.quantize == "none"
    with pytest.raises(AttributeError):
        config.out = "other.tflite"  # frozen


@pytest.mark.parametrize("where", ["under /proc", "under a file", "a folder as tflite file"])
def test_an_out_that_cannot_be_written_is_an_error_naming_it(where, tmp_path, run_cli):
    """Found before the model loads (the model file need not exist), from Python and the CLI."""
    (tmp_path / "plain.txt").write_text("x")
    (tmp_path / "folder.tflite").mkdir()
    out, export_format = {
        "under /proc": ("/proc/keras-maskrcnn-test/model", "saved_model"),
        "under a file": (str(tmp_path / "plain.txt" / "model.tflite"), "tflite"),
        "a folder as tflite file": (str(tmp_path / "folder.tflite"), "tflite"),
    }[where]
    config = ExportConfig(model=str(tmp_path / "absent.keras"), out=out, format=export_format)
    with pytest.raises(commands.UserError) as raised:
        commands.export(config)
    message = str(raised.value)
    assert message.startswith(f"out (--out) {out}: cannot write there (")
    code, _, err = run_cli("export", "--model", tmp_path / "absent.keras", "--format",
                           export_format, "--out", out)
    assert code == 2 and err == f"keras-maskrcnn export: error: {message}\n"
