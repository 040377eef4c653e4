"""Held-out-style benchmark models: PyTorch and Hugging Face exports with random weights (each with
both of torch's exporters), TensorFlow models lowered by tf2onnx, and ONNX's light models.

The networks are the kinds a new user brings (they are not the fixtures the passes were written
against):

* built in PyTorch (:mod:`benchmarks.torch_networks`): ``resnet50-torch`` (bottleneck ResNet-50),
  ``mobilenetv3-torch`` (inverted residuals with HardSwish and squeeze-excitation),
  ``efficientnet-torch`` (MBConv with SiLU and squeeze-excitation), ``yolo-torch`` (a YOLOv8n-style
  backbone and neck: Conv-BN-SiLU, C2f blocks with Split, SPPF, nearest Resize + Concat),
  ``deeplab-torch`` (segmentation: dilated stages, ASPP, bilinear upsampling), ``unet-torch``
  (a diffusion-style UNet: timestep embedding, GroupNorm, attention, skip concatenations);
* Hugging Face ``transformers`` models built from configs constructed in code (nothing is
  downloaded; :mod:`benchmarks.torch_exports` gives their sizes): ``bert-hf``, ``distilbert-hf``,
  ``vit-hf``, ``swin-hf``, ``clip-vision-hf``, ``whisper-encoder-hf``, ``t5-encoder-hf``,
  ``gpt2-hf``, ``llama-hf``;
* each of those as ``torch.onnx.export(dynamo=False, opset_version=17)`` (the key as is) and as
  torch's default exporter, dynamo, opset 18 (the key with ``-dynamo``): the forms differ
  (attention, shape computations, BatchNorm left in the graph);
* TensorFlow through tf2onnx with its optimizers on (:mod:`benchmarks.keras_models`):
  ``inceptionv3-keras``, ``mobilenetv2-keras`` and ``ssd-nms-tf`` (a MobileNetV2 detector whose
  boxes go through ``tf.image.combined_non_max_suppression``: TensorRT cannot build the NMS, so
  the model is compiled partitioned and measured by the compute layers of its segment engines);
* ONNX's light models (shipped inside the ``onnx`` package as backend test data, weights random):
  ``googlenet-light`` (Inception v1), ``resnet50-light``, ``densenet121-light``,
  ``squeezenet-light``, ``shufflenet-light``, ``inception-v2-light``, ``vgg19-light``.

PyTorch, onnxscript and transformers are the optional extra ``bench`` (``pip install
trtcompile[bench]``); without them the suite measures the TensorFlow and light models only. Biases
and normalization scales that an initializer leaves constant (transformers: zeros and ones) get
small random values, as a trained model's have. Every export runs in a child process and is cached
as a file in the benchmarks' cache folder, with its weights inline.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import onnx

#: Networks built in PyTorch (benchmarks.torch_networks).
TORCH_MODELS = ("resnet50-torch", "mobilenetv3-torch", "efficientnet-torch", "yolo-torch",
                "deeplab-torch", "unet-torch")
#: Transformers models built from configs.
HF_MODELS = ("bert-hf", "distilbert-hf", "vit-hf", "swin-hf", "clip-vision-hf",
             "whisper-encoder-hf", "t5-encoder-hf", "gpt2-hf", "llama-hf")
#: Suffix of the key of a torch model exported with torch's default exporter (dynamo).
DYNAMO = "-dynamo"
#: ONNX light models: key -> file name in onnx's backend test data.
LIGHT_MODELS = {
    "googlenet-light": "light_inception_v1.onnx",
    "resnet50-light": "light_resnet50.onnx",
    "densenet121-light": "light_densenet121.onnx",
    "squeezenet-light": "light_squeezenet.onnx",
    "shufflenet-light": "light_shufflenet.onnx",
    "inception-v2-light": "light_inception_v2.onnx",
    "vgg19-light": "light_vgg19.onnx",
}
KERAS_INCEPTION = "inceptionv3-keras"
#: TensorFlow models: key -> the keras_models key of their tf2onnx lowering.
TF_MODELS = {KERAS_INCEPTION: "inceptionv3", "mobilenetv2-keras": "mobilenetv2",
             "ssd-nms-tf": "ssd-nms"}
#: Models TensorRT cannot build whole: compiled partitioned, measured by their segment engines.
PARTITIONED = ("ssd-nms-tf",)
#: Part of every cached export's file name: bump it when the export script changes (legacy exports,
#: dynamo exports).
EXPORT_VERSION, DYNAMO_EXPORT_VERSION = 2, 3


def available_keys() -> list[str]:
    """Every model this machine can make: the torch and transformers ones only when installed."""
    keys: list[str] = []
    if all(importlib.util.find_spec(name) is not None for name in ("torch", "onnxscript")):
        torch_keys = list(TORCH_MODELS)
        if importlib.util.find_spec("transformers") is not None:
            torch_keys += HF_MODELS
        for key in torch_keys:
            keys += [key, key + DYNAMO]
    keys += [*TF_MODELS, *LIGHT_MODELS]
    return keys


def light_model_path(key: str) -> Path:
    """Where the onnx package keeps light model ``key``."""
    return Path(onnx.__file__).parent / "backend" / "test" / "data" / "light" / LIGHT_MODELS[key]


def exporter_of(key: str) -> tuple[str, str]:
    """(network key, exporter) of a torch model's key: ``legacy`` or ``dynamo``."""
    if key.endswith(DYNAMO):
        return key[: -len(DYNAMO)], "dynamo"
    return key, "legacy"


def load(key: str, cache_dir: Path) -> onnx.ModelProto:
    """The model ``key``, from the cache or exported now in a child process."""
    if key in LIGHT_MODELS:
        return onnx.load(str(light_model_path(key)))
    if key in TF_MODELS:
        from benchmarks import keras_models

        return keras_models.lowered_model(TF_MODELS[key], cache_dir)
    network, exporter = exporter_of(key)
    if network not in TORCH_MODELS and network not in HF_MODELS:
        raise KeyError(f"unknown benchmark model '{key}' (known: {', '.join(available_keys())})")
    return torch_export(network, exporter, cache_dir)


def torch_export(network: str, exporter: str, cache_dir: Path) -> onnx.ModelProto:
    """The export of torch or transformers ``network`` by ``exporter`` (``legacy``, ``dynamo`` or
    ``dynamo-eager``, see :mod:`benchmarks.torch_exports`), from the cache or made now in a child
    process."""
    # Legacy exports keep the file names they always had, so earlier caches stay valid.
    if exporter == "legacy":
        path = cache_dir / f"{network}-{EXPORT_VERSION}.onnx"
    else:
        path = cache_dir / f"{network}-{exporter}-{DYNAMO_EXPORT_VERSION}.onnx"
    if not path.exists():
        cache_dir.mkdir(parents=True, exist_ok=True)
        print(f"exporting {network} ({exporter}) ...", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "benchmarks.torch_exports", network, str(path), exporter],
                       check=True, cwd=Path(__file__).resolve().parent.parent)
    return onnx.load(str(path))


__all__ = ["DYNAMO", "HF_MODELS", "KERAS_INCEPTION", "LIGHT_MODELS", "PARTITIONED", "TF_MODELS",
           "TORCH_MODELS", "available_keys", "exporter_of", "light_model_path", "load", "torch_export"]
