"""keras-maskrcnn: Mask R-CNN on TensorFlow 2 / Keras 3, trainable with model.fit,
servable as a SavedModel and exportable to TFLite."""

from setuptools import find_packages, setup

# `export/` sits at the top of the repository (the user's layout) but installs as
# `keras_maskrcnn.export`: PyPI has an unrelated top-level package called `export`.
packages = find_packages(include=["keras_maskrcnn", "keras_maskrcnn.*"])
packages.append("keras_maskrcnn.export")

setup(
    # The import name is keras_maskrcnn, but on PyPI "keras-maskrcnn" is an unrelated 2019
    # project that installs the same import name: this distribution is keras3-maskrcnn.
    name="keras3-maskrcnn",
    version="0.1.0",
    description="Mask R-CNN instance segmentation on TensorFlow 2 / Keras 3",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.11,<3.12",
    packages=packages,
    package_dir={"keras_maskrcnn.export": "export"},
    # The serve command's browser page.
    package_data={"keras_maskrcnn.serving": ["static/*.html"]},
    install_requires=[
        "tensorflow==2.21.0",
        "keras==3.15.1",
        "numpy==2.4.6",
        "pycocotools==2.0.11",
        "pillow==12.0.0",
        "tqdm==4.70.1",
        # Keras' TensorBoard callback writes its scalars through it.
        "tensorboard==2.21.0",
        # LiteRT, the runtime phones use, runs the exported .tflite models.
        "ai-edge-litert==2.3.0",
    ],
    extras_require={
        # import-linter checks the import contracts (.importlinter) in `make test`; selenium
        # drives the serve page's browser test (Debian's chromium and chromium-driver: `make
        # test` installs them); pytest-xdist runs the suite in two processes.
        "test": ["pytest==9.2.0", "pytest-xdist==3.8.0", "import-linter==2.17",
                 "selenium==4.51.0"],
        # Reading torchvision checkpoints (keras-maskrcnn convert-torchvision) and the parity test.
        "torch": ["torch==2.14.1", "torchvision==0.29.1"],
        # keras-maskrcnn serve: an ASGI app (Starlette) and its server (uvicorn), which runs
        # on uvloop's event loop and parses HTTP with httptools when they are installed (both
        # in C; 1.7 ms less a request than asyncio's loop and h11, docs/serving.md); TF
        # Serving's gRPC API (--grpc-port) with grpcio and TF Serving's own protos.
        "serve": ["starlette==1.10.0", "uvicorn==0.54.0", "uvloop==0.22.1", "httptools==0.9.0",
                  "grpcio==1.85.3", "tensorflow-serving-api==2.21.0"],
    },
    entry_points={"console_scripts": ["keras-maskrcnn=keras_maskrcnn.cli:main"]},
)
