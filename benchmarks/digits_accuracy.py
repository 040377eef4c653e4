"""Top-1 accuracy of three networks trained on scikit-learn's digits at FP32, FP16, BF16 and INT8.

Trains Keras networks on the bundled 8x8 digits (fixed seed, stratified held-out test split): a
small CNN, a deeper residual network (BatchNorm, residual adds, a strided projection block) and a
small transformer encoder (self-attention, LayerNormalization), exports each to ONNX with tf2onnx,
compiles it with ``trtcompile compile --precision fp32|fp16|bf16|int8`` (FP16 with the static
keep-list and with the keep-list measured on the training samples; BF16 on the export converted to
opset 22, where ONNX's Conv and pools take bfloat16; INT8 calibrated on training samples only),
records each command's exit code, evaluates each ``optimized.onnx`` with ONNX Runtime on the
test split and writes the table into docs/benchmarks.md (section ``precision-accuracy``). Exits 1
when a compile fails or a precision misses its accuracy target.

Run: ``python benchmarks/digits_accuracy.py [--method entropy] [--epochs 40]
[--networks cnn,resnet,transformer]``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

SEED = 0
INPUT_NAME = "image"


def load_digits_split(seed: int = SEED):
    """Digits scaled to [0, 1] as NHWC float32, with a stratified 80/20 train/test split."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)[..., None]
    return train_test_split(images, digits.target.astype(np.int64), test_size=0.2,
                            random_state=seed, stratify=digits.target)


def fit(model, x_train: np.ndarray, y_train: np.ndarray, epochs: int):
    """Train a classifier of logits the way every network here is trained: Adam at 1e-3, sparse
    cross-entropy, batches of 32, shuffled."""
    import keras

    model.compile(optimizer=keras.optimizers.Adam(1e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    model.fit(x_train, y_train, batch_size=32, epochs=epochs, verbose=0, shuffle=True)
    return model


def train(x_train: np.ndarray, y_train: np.ndarray, epochs: int, seed: int = SEED):
    """A small CNN: two 3x3 convs, pooling, two dense layers."""
    import keras

    keras.utils.set_random_seed(seed)
    inputs = keras.Input((8, 8, 1), name=INPUT_NAME)
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu")(inputs)
    x = keras.layers.Conv2D(32, 3, padding="same", activation="relu")(x)
    x = keras.layers.MaxPooling2D(2)(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(64, activation="relu")(x)
    outputs = keras.layers.Dense(10, name="logits")(x)
    return fit(keras.Model(inputs, outputs), x_train, y_train, epochs)


def train_resnet(x_train: np.ndarray, y_train: np.ndarray, epochs: int, seed: int = SEED):
    """A small ResNet: stem Conv-BN-ReLU, two identity blocks and one strided projection block
    (Conv-BN-ReLU-Conv-BN + skip, Add, ReLU), global average pooling, Dense 10."""
    import keras
    from keras import layers

    keras.utils.set_random_seed(seed)

    def conv_bn(x, filters, strides=1, relu=True):
        x = layers.Conv2D(filters, 3, strides=strides, padding="same", use_bias=False)(x)
        x = layers.BatchNormalization()(x)
        return layers.ReLU()(x) if relu else x

    def block(x, filters, strides=1):
        skip = x
        if strides != 1 or x.shape[-1] != filters:
            skip = layers.Conv2D(filters, 1, strides=strides, use_bias=False)(x)
            skip = layers.BatchNormalization()(skip)
        y = conv_bn(conv_bn(x, filters, strides), filters, relu=False)
        return layers.ReLU()(layers.Add()([y, skip]))

    inputs = keras.Input((8, 8, 1), name=INPUT_NAME)
    x = conv_bn(inputs, 32)
    x = block(x, 32)
    x = block(x, 32)
    x = block(x, 64, strides=2)
    x = layers.GlobalAveragePooling2D()(x)
    outputs = layers.Dense(10, name="logits")(x)
    return fit(keras.Model(inputs, outputs), x_train, y_train, epochs)


def train_transformer(x_train: np.ndarray, y_train: np.ndarray, epochs: int, seed: int = SEED):
    """A small transformer encoder: each image row is a token (8 tokens of 8 pixels), embedded
    to 32 with a learned position embedding, one block of 2-head self-attention and a ReLU MLP,
    each with a residual Add and LayerNormalization, mean over tokens, Dense 10."""
    import keras
    from keras import layers

    keras.utils.set_random_seed(seed)
    inputs = keras.Input((8, 8, 1), name=INPUT_NAME)
    tokens = layers.Reshape((8, 8))(inputs)
    x = layers.Dense(32)(tokens)
    positions = layers.Embedding(8, 32)(keras.ops.arange(8))
    x = x + positions
    attended = layers.MultiHeadAttention(num_heads=2, key_dim=16)(x, x)
    x = layers.LayerNormalization()(x + attended)
    hidden = layers.Dense(64, activation="relu")(x)
    x = layers.LayerNormalization()(x + layers.Dense(32)(hidden))
    x = layers.GlobalAveragePooling1D()(x)
    outputs = layers.Dense(10, name="logits")(x)
    return fit(keras.Model(inputs, outputs), x_train, y_train, epochs)


#: key -> (title, trainer, description for the table).
NETWORKS = {
    "cnn": ("digits CNN", train, "Conv 16, Conv 32, MaxPool, Dense 64, Dense 10"),
    "resnet": ("digits ResNet", train_resnet,
               "stem Conv-BN-ReLU 32, two identity residual blocks, a strided projection block to "
               "64 channels (Conv-BN with residual Add + ReLU), global average pooling, Dense 10"),
    "transformer": ("digits transformer", train_transformer,
                    "8 row tokens embedded to 32 with learned positions, 2-head self-attention and "
                    "a ReLU MLP (64), each with residual Add and LayerNormalization, token mean, "
                    "Dense 10"),
}


def export_onnx(model, path: Path) -> None:
    """Lower the Keras model to ONNX with tf2onnx (through trtcompile's IR writer)."""
    import tensorflow as tf
    import tf2onnx

    from trtcompile import ir

    spec = (tf.TensorSpec((None, 8, 8, 1), tf.float32, name=INPUT_NAME),)
    onnx_model, _ = tf2onnx.convert.from_keras(model, input_signature=spec, opset=17)
    ir.save(ir.export_model(ir.import_model(onnx_model)), path)


def top1(onnx_path: Path, images: np.ndarray, labels: np.ndarray) -> float:
    """Top-1 accuracy of the ONNX model on ``images`` (ONNX Runtime, CPU; a bfloat16 model as its
    float32 emulation, as parity runs it)."""
    import onnx

    from trtcompile import verify

    session = verify.inference_session(onnx.load(str(onnx_path)))
    logits = session.run(None, {session.get_inputs()[0].name: images})[0]
    return float(np.mean(logits.argmax(axis=1) == labels) * 100.0)


def compile_precision(onnx_path: Path, output: Path, precision: str, calib: Path | None,
                      method: str) -> tuple[int, float]:
    """``trtcompile compile`` at ``precision`` (INT8 with ``--calib-method``; FP16 given ``calib``
    keeps nodes by data); returns (exit code, seconds)."""
    from trtcompile.cli import main

    argv = ["compile", str(onnx_path), "-o", str(output), "--precision", precision, "--no-engine", "-q"]
    if calib is not None:
        argv += ["--calib-data", str(calib)]
        if precision == "int8":
            argv += ["--calib-method", method]
    start = time.perf_counter()
    code = main(argv)
    return code, time.perf_counter() - start


#: Rows of each network: (label, precision, whether the calibration samples are given).
ROWS = (("FP32", "fp32", False), ("FP16 (static keep-list)", "fp16", False),
        ("FP16 (keep-list from data)", "fp16", True), ("BF16 (opset 22)", "bf16", False),
        ("INT8", "int8", True))


def opset_22(onnx_path: Path, path: Path) -> Path:
    """The export converted to opset 22 (where Conv and the pools have bfloat16 forms)."""
    import onnx
    import onnx.version_converter

    model = onnx.version_converter.convert_version(onnx.load(str(onnx_path)), 22)
    onnx.save(model, str(path))
    return path


def measure_network(key: str, data, epochs: int, method: str) -> dict:
    """Train one network, compile it at each precision, evaluate each on the test split."""
    x_train, x_test, y_train, y_test = data
    title, trainer, _ = NETWORKS[key]
    start = time.perf_counter()
    model = trainer(x_train, y_train, epochs)
    train_seconds = time.perf_counter() - start
    keras_top1 = float(np.mean(model.predict(x_test, verbose=0).argmax(axis=1) == y_test) * 100)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        onnx_path = work / "digits.onnx"
        export_onnx(model, onnx_path)
        calib = work / "calib.npz"
        np.savez(calib, **{INPUT_NAME: x_train})  # training samples only
        onnx_top1 = top1(onnx_path, x_test, y_test)
        converted = opset_22(onnx_path, work / "digits_opset22.onnx")
        for index, (label, precision, with_data) in enumerate(ROWS):
            output = work / f"row{index}"
            source = converted if precision == "bf16" else onnx_path
            code, seconds = compile_precision(source, output, precision,
                                              calib if with_data else None, method)
            accuracy = top1(output / "optimized.onnx", x_test, y_test) if code == 0 else None
            rows.append((label, precision, code, accuracy, seconds))
    return {"key": key, "title": title, "keras_top1": keras_top1, "onnx_top1": onnx_top1,
            "train_seconds": train_seconds, "rows": rows}


def main(argv: list[str] | None = None) -> int:
    """Measure and print the figures; write the docs section unless ``--no-write``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", default="entropy", choices=("entropy", "minmax", "percentile"))
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--networks", default=",".join(NETWORKS))
    parser.add_argument("--no-write", action="store_true", help="print the table only")
    args = parser.parse_args(argv)

    data = load_digits_split()
    x_train, x_test = data[0], data[1]
    results = [measure_network(key, data, args.epochs, args.method)
               for key in args.networks.split(",")]
    targets = {"fp32": None, "fp16": 0.5, "bf16": 1.0, "int8": 1.0}
    lines = [
        "## Precision and accuracy (digits CNN, ResNet and transformer)",
        "",
        f"Keras networks trained on scikit-learn's bundled 8x8 digits ({len(x_train)} training "
        f"images, {args.epochs} epochs, seed {SEED}), evaluated on a stratified held-out split of "
        f"{len(x_test)} images. Each row is `trtcompile compile --precision P` on the tf2onnx "
        "export (exit code shown), its `optimized.onnx` run with ONNX Runtime (CPU). The "
        "training images are the calibration samples (`--calib-data`, never the test split): INT8 "
        f"is calibrated on them (`--calib-method {args.method}`; the compile holds out the last "
        "20% and judges parity and top-1 agreement on those), and the data-driven FP16 row keeps "
        "in FP32 the nodes the samples show at risk (`precision-fp16{keep=auto}`). The BF16 row "
        "compiles the export converted to opset 22 (`onnx.version_converter`), where ONNX's Conv "
        "and pools take bfloat16, and runs the bfloat16 graph as parity does (float32 arithmetic, "
        "every stored tensor rounded to bfloat16).",
        "",
    ]
    for result in results:
        lines.append(f"- **{result['title']}** ({NETWORKS[result['key']][2]}): trained in "
                     f"{result['train_seconds']:.0f} s; Keras top-1 {result['keras_top1']:.2f}%, "
                     f"exported ONNX top-1 {result['onnx_top1']:.2f}%.")
    lines += ["", "| network | precision | exit code | top-1 (%) | change vs FP32 (points) | target "
              "| compile (s) |", "|---|---|---:|---:|---:|---|---:|"]
    failures = []
    for result in results:
        reference = result["rows"][0][3]
        for label, precision, code, accuracy, seconds in result["rows"]:
            target = targets[precision]
            target_text = "reference" if target is None else f"within {target:g}"
            if code != 0 or accuracy is None or reference is None:
                failures.append(f"{result['title']} {label}: exit code {code}")
                lines.append(f"| {result['title']} | {label} | {code} | - | - | {target_text} | "
                             f"{seconds:.1f} |")
                continue
            change = accuracy - reference
            if target is not None and abs(change) > target:
                failures.append(f"{result['title']} {label}: {change:+.2f} points")
            lines.append(f"| {result['title']} | {label} | {code} | {accuracy:.2f} | "
                         f"{change:+.2f} | {target_text} | {seconds:.1f} |")
    from benchmarks.markdown_section import machine_line, write_section

    lines += ["", machine_line(), "Rerun: `python benchmarks/digits_accuracy.py`."]
    markdown = "\n".join(lines)
    print(markdown)
    if not args.no_write:
        write_section("precision-accuracy", markdown)
    if failures:
        print("targets missed: " + "; ".join(failures), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    raise SystemExit(main())
