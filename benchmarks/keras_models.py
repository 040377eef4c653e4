"""Keras applications as benchmark inputs: the networks, their tf2onnx lowerings and the file cache.

Networks are built with ``weights=None`` (nothing is downloaded), batch 1. Each lowering runs in a
child process so TensorFlow's memory goes away with it, and is cached as an ONNX file in the
benchmarks' cache folder (``--cache-dir``), so the scripts share one lowering per network and mode.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import onnx

#: key -> (Keras application class, input height and width).
KERAS_MODELS: dict[str, tuple[str, int]] = {
    "inceptionv3": ("InceptionV3", 299),
    "resnet50": ("ResNet50", 224),
    "mobilenetv2": ("MobileNetV2", 224),
}
#: Key of the detector lowered by _DETECTOR_SCRIPT (not a Keras application), and its input size.
DETECTOR, DETECTOR_SIZE = "ssd-nms", 224

#: Where lowered models are cached unless ``--cache-dir`` says otherwise.
DEFAULT_CACHE_DIR = Path(tempfile.gettempdir()) / "trtcompile-benchmark-models"

#: Child process: ``<class> <size> <path> <optimize: 0|1>`` -> the tf2onnx lowering written to path.
_LOWER_SCRIPT = """
import os, sys
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import keras, onnx, tensorflow as tf, tf2onnx
name, size, path, optimize = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4] == "1"
model = getattr(keras.applications, name)(weights=None)
spec = (tf.TensorSpec((1, size, size, 3), tf.float32, name="input"),)
extra = {} if optimize else {"optimizers": {}}
lowered, _ = tf2onnx.convert.from_keras(model, input_signature=spec, opset=17, **extra)
lowered.ir_version = 10
tmp = path + ".tmp"
onnx.save(lowered, tmp)
os.replace(tmp, path)
"""

#: Child process: ``<unused> <size> <path> <optimize: 0|1>`` -> a single-shot detector lowered by
#: tf2onnx: Keras MobileNetV2 features (``weights=None``), a 3x3 convolution predicting 4 box offsets
#: and 20 class scores per position, then ``tf.image.combined_non_max_suppression``.
_DETECTOR_SCRIPT = """
import os, sys
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import keras, onnx, tensorflow as tf, tf2onnx
size, path, optimize = int(sys.argv[2]), sys.argv[3], sys.argv[4] == "1"
tf.random.set_seed(0)
backbone = keras.applications.MobileNetV2(weights=None, include_top=False,
                                          input_shape=(size, size, 3))
head = keras.layers.Conv2D(24, 3, padding="same")


@tf.function(input_signature=[tf.TensorSpec((1, size, size, 3), tf.float32, name="image")])
def detect(image):
    predictions = head(backbone(image))
    cells = predictions.shape[1] * predictions.shape[2]
    predictions = tf.reshape(predictions, [1, cells, 24])
    centers = tf.sigmoid(predictions[:, :, :2])
    sizes = 0.2 * tf.sigmoid(predictions[:, :, 2:4])
    boxes = tf.concat([centers - sizes, centers + sizes], axis=-1)[:, :, None, :]
    scores = tf.sigmoid(predictions[:, :, 4:])
    result = tf.image.combined_non_max_suppression(boxes, scores, 20, 50, score_threshold=0.1)
    return {"boxes": result.nmsed_boxes, "scores": result.nmsed_scores,
            "classes": result.nmsed_classes, "detections": result.valid_detections}


extra = {} if optimize else {"optimizers": {}}
lowered, _ = tf2onnx.convert.from_function(detect, input_signature=detect.input_signature, opset=17,
                                            **extra)
lowered.ir_version = 10
tmp = path + ".tmp"
onnx.save(lowered, tmp)
os.replace(tmp, path)
"""

#: Child process: ``<class> <path>`` -> the application saved as a ``.keras`` file; prints its
#: parameter count.
SAVE_KERAS_SCRIPT = """
import os, sys
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
import keras
model = getattr(keras.applications, sys.argv[1])(weights=None)
model.save(sys.argv[2])
print(model.count_params())
"""


def lowered_model(key: str, cache_dir: Path, *, faithful: bool = False) -> onnx.ModelProto:
    """The tf2onnx lowering of the Keras application ``key``, from the cache or made in a child
    process.

    By default tf2onnx's own optimizers run (they fold BatchNorm into the convolutions and remove
    the NHWC/NCHW Transposes); ``faithful=True`` turns them off, so every Conv and pool stays
    wrapped in an NHWC->NCHW Transpose before and an NCHW->NHWC Transpose after.
    """
    class_name, size = ("detector", DETECTOR_SIZE) if key == DETECTOR else KERAS_MODELS[key]
    path = cache_dir / (f"{key}_tf2onnx_faithful.onnx" if faithful else f"{key}_tf2onnx.onnx")
    if not path.exists():
        cache_dir.mkdir(parents=True, exist_ok=True)
        mode = " (optimizers off)" if faithful else ""
        print(f"lowering Keras {class_name} with tf2onnx{mode} ...", file=sys.stderr)
        script = _DETECTOR_SCRIPT if key == DETECTOR else _LOWER_SCRIPT
        subprocess.run([sys.executable, "-c", script, class_name, str(size), str(path),
                        "0" if faithful else "1"], check=True)
    return onnx.load(str(path))


def add_cache_dir_argument(parser: argparse.ArgumentParser) -> None:
    """The ``--cache-dir`` option every benchmark over Keras applications takes."""
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE_DIR,
                        help="folder for the lowered ONNX models")


__all__ = ["DEFAULT_CACHE_DIR", "DETECTOR", "KERAS_MODELS", "SAVE_KERAS_SCRIPT", "add_cache_dir_argument",
           "lowered_model"]
