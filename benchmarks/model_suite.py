"""Held-out-style benchmark models: PyTorch and Hugging Face exports with random weights, ONNX's
light models, and Keras InceptionV3.

The networks are the kinds a new user brings (they are not the fixtures the passes were written
against):

* built in PyTorch here, exported by ``torch.onnx.export(..., dynamo=False, opset_version=17)`` in
  eval mode (the exporter folds BatchNorm into the convolutions): ``resnet50-torch`` (bottleneck
  ResNet-50), ``mobilenetv3-torch`` (inverted residuals with HardSwish and squeeze-excitation),
  ``efficientnet-torch`` (MBConv with SiLU and squeeze-excitation), ``yolo-torch`` (a YOLOv8n-style
  backbone and neck: Conv-BN-SiLU, C2f blocks with Split, SPPF, nearest Resize + Concat);
* Hugging Face ``transformers`` models built from configs constructed in code (nothing is
  downloaded): ``bert-hf`` (BERT-base, 12 layers), ``distilbert-hf`` (DistilBERT, 6 layers),
  ``vit-hf`` (ViT-B/16, 224x224), sequence length 128;
* ONNX's light models (shipped inside the ``onnx`` package as backend test data, weights random):
  ``googlenet-light`` (Inception v1), ``resnet50-light``, ``densenet121-light``,
  ``squeezenet-light``, ``shufflenet-light``, ``inception-v2-light``, ``vgg19-light``;
* ``inceptionv3-keras``: Keras InceptionV3 lowered by tf2onnx with its optimizers on.

PyTorch and transformers are the optional extra ``bench`` (``pip install trtcompile[bench]``);
without them the suite measures the light models and Keras InceptionV3 only. Biases and
normalization scales that an initializer leaves constant (transformers: zeros and ones) get
small random values, as a trained model's have. Every export runs in a
child process and is cached as a file in the benchmarks' cache folder, with its weights inline.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import onnx

#: Torch-built networks: key -> name of the builder function in the child script.
TORCH_MODELS = ("resnet50-torch", "mobilenetv3-torch", "efficientnet-torch", "yolo-torch")
#: Transformers models built from configs.
HF_MODELS = ("bert-hf", "distilbert-hf", "vit-hf")
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
#: Part of every cached export's file name: bump it when the export script changes.
EXPORT_VERSION = 2

#: Child process: ``<key> <path>`` -> the export written to path (one file, weights inline).
_EXPORT_SCRIPT = r'''
import os, sys
import torch
from torch import nn

key, path = sys.argv[1], sys.argv[2]
torch.manual_seed(0)


def conv_bn(cin, cout, k=1, s=1, groups=1, act=nn.ReLU):
    layers = [nn.Conv2d(cin, cout, k, s, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    if act is not None:
        layers.append(act())
    return nn.Sequential(*layers)


def randomize_bn(model):
    # Random running statistics, so folded BatchNorm is not the identity.
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            with torch.no_grad():
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.1, 0.1)
    return model


class Bottleneck(nn.Module):
    def __init__(self, cin, mid, stride):
        super().__init__()
        cout = mid * 4
        self.body = nn.Sequential(conv_bn(cin, mid), conv_bn(mid, mid, 3, stride),
                                  conv_bn(mid, cout, act=None))
        self.down = conv_bn(cin, cout, 1, stride, act=None) if stride != 1 or cin != cout else None
        self.relu = nn.ReLU()

    def forward(self, x):
        return self.relu(self.body(x) + (x if self.down is None else self.down(x)))


def resnet50():
    layers = [conv_bn(3, 64, 7, 2), nn.MaxPool2d(3, 2, 1)]
    cin = 64
    for mid, blocks, stride in ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)):
        for i in range(blocks):
            layers.append(Bottleneck(cin, mid, stride if i == 0 else 1))
            cin = mid * 4
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, 1000))


class SqueezeExcite(nn.Module):
    def __init__(self, c, squeezed, act, gate):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc1, self.act = nn.Conv2d(c, squeezed, 1), act()
        self.fc2, self.gate = nn.Conv2d(squeezed, c, 1), gate()

    def forward(self, x):
        return x * self.gate(self.fc2(self.act(self.fc1(self.pool(x)))))


class InvertedResidual(nn.Module):
    def __init__(self, cin, mid, cout, k, stride, squeezed, act, gate, se_act):
        super().__init__()
        layers = [] if mid == cin else [conv_bn(cin, mid, act=act)]
        layers.append(conv_bn(mid, mid, k, stride, groups=mid, act=act))
        if squeezed:
            layers.append(SqueezeExcite(mid, squeezed, se_act, gate))
        layers.append(conv_bn(mid, cout, act=None))
        self.body = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        y = self.body(x)
        return x + y if self.residual else y


def mobilenetv3():
    # MobileNetV3-Large: (kernel, expanded, out, SE, HardSwish, stride).
    table = [(3, 16, 16, 0, 0, 1), (3, 64, 24, 0, 0, 2), (3, 72, 24, 0, 0, 1), (5, 72, 40, 1, 0, 2),
             (5, 120, 40, 1, 0, 1), (5, 120, 40, 1, 0, 1), (3, 240, 80, 0, 1, 2),
             (3, 200, 80, 0, 1, 1), (3, 184, 80, 0, 1, 1), (3, 184, 80, 0, 1, 1),
             (3, 480, 112, 1, 1, 1), (3, 672, 112, 1, 1, 1), (5, 672, 160, 1, 1, 2),
             (5, 960, 160, 1, 1, 1), (5, 960, 160, 1, 1, 1)]
    layers = [conv_bn(3, 16, 3, 2, act=nn.Hardswish)]
    cin = 16
    for k, mid, cout, se, hs, s in table:
        layers.append(InvertedResidual(cin, mid, cout, k, s, mid // 4 if se else 0,
                                       nn.Hardswish if hs else nn.ReLU, nn.Hardsigmoid, nn.ReLU))
        cin = cout
    return nn.Sequential(*layers, conv_bn(cin, 960, act=nn.Hardswish), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(960, 1280), nn.Hardswish(), nn.Linear(1280, 1000))


def efficientnet_b0():
    # EfficientNet-B0 stages: (expansion, out, repeats, stride, kernel).
    stages = [(1, 16, 1, 1, 3), (6, 24, 2, 2, 3), (6, 40, 2, 2, 5), (6, 80, 3, 2, 3),
              (6, 112, 3, 1, 5), (6, 192, 4, 2, 5), (6, 320, 1, 1, 3)]
    layers = [conv_bn(3, 32, 3, 2, act=nn.SiLU)]
    cin = 32
    for e, cout, repeats, stride, k in stages:
        for i in range(repeats):
            layers.append(InvertedResidual(cin, cin * e, cout, k, stride if i == 0 else 1,
                                           max(1, cin // 4), nn.SiLU, nn.Sigmoid, nn.SiLU))
            cin = cout
    return nn.Sequential(*layers, conv_bn(cin, 1280, act=nn.SiLU), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(1280, 1000))


def cbs(cin, cout, k=1, s=1):
    return conv_bn(cin, cout, k, s, act=nn.SiLU)


class YoloBottleneck(nn.Module):
    def __init__(self, c, shortcut):
        super().__init__()
        self.cv1, self.cv2, self.add = cbs(c, c, 3), cbs(c, c, 3), shortcut

    def forward(self, x):
        y = self.cv2(self.cv1(x))
        return x + y if self.add else y


class C2f(nn.Module):
    def __init__(self, cin, cout, n, shortcut):
        super().__init__()
        self.c = cout // 2
        self.cv1 = cbs(cin, 2 * self.c)
        self.cv2 = cbs((2 + n) * self.c, cout)
        self.m = nn.ModuleList(YoloBottleneck(self.c, shortcut) for _ in range(n))

    def forward(self, x):
        y = list(self.cv1(x).split((self.c, self.c), 1))
        y.extend(m(y[-1]) for m in self.m)
        return self.cv2(torch.cat(y, 1))


class SPPF(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.cv1, self.cv2 = cbs(cin, cin // 2), cbs(cin * 2, cout)
        self.m = nn.MaxPool2d(5, 1, 2)

    def forward(self, x):
        x = self.cv1(x)
        y1 = self.m(x)
        y2 = self.m(y1)
        return self.cv2(torch.cat((x, y1, y2, self.m(y2)), 1))


class YoloN(nn.Module):
    # YOLOv8n backbone and PAN neck with a 1x1 prediction conv per scale (no box decoding).
    def __init__(self):
        super().__init__()
        self.b0, self.b1, self.b2 = cbs(3, 16, 3, 2), cbs(16, 32, 3, 2), C2f(32, 32, 1, True)
        self.b3, self.b4 = cbs(32, 64, 3, 2), C2f(64, 64, 2, True)
        self.b5, self.b6 = cbs(64, 128, 3, 2), C2f(128, 128, 2, True)
        self.b7, self.b8, self.b9 = cbs(128, 256, 3, 2), C2f(256, 256, 1, True), SPPF(256, 256)
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.n12, self.n15 = C2f(384, 128, 1, False), C2f(192, 64, 1, False)
        self.n16, self.n18 = cbs(64, 64, 3, 2), C2f(192, 128, 1, False)
        self.n19, self.n21 = cbs(128, 128, 3, 2), C2f(384, 256, 1, False)
        self.heads = nn.ModuleList(nn.Conv2d(c, 84, 1) for c in (64, 128, 256))

    def forward(self, x):
        p3 = self.b4(self.b3(self.b2(self.b1(self.b0(x)))))
        p4 = self.b6(self.b5(p3))
        p5 = self.b9(self.b8(self.b7(p4)))
        n12 = self.n12(torch.cat((self.up(p5), p4), 1))
        n15 = self.n15(torch.cat((self.up(n12), p3), 1))
        n18 = self.n18(torch.cat((self.n16(n15), n12), 1))
        n21 = self.n21(torch.cat((self.n19(n18), p5), 1))
        return tuple(h(t) for h, t in zip(self.heads, (n15, n18, n21)))


def export(model, args, names):
    model = randomize_bn(model).eval()
    tmp = path + ".tmp"
    with torch.no_grad():
        torch.onnx.export(model, args, tmp, dynamo=False, opset_version=17, input_names=names,
                          do_constant_folding=True)
    import onnx
    proto = onnx.load(tmp)
    onnx.save(proto, tmp, save_as_external_data=False)
    os.replace(tmp, path)


def randomize_constants(model):
    # transformers initializes every bias to 0 and every LayerNorm scale to 1; a trained model's
    # are neither, and a simplifier that drops "x + 0" would be measured on an artifact.
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim == 1 and bool((p == p.flatten()[0]).all()):
                p.add_(torch.randn_like(p) * 0.02)
    return model


def hf(key):
    import transformers as tr
    seq = 128
    if key == "bert-hf":
        model = tr.BertModel(tr.BertConfig(), add_pooling_layer=True)
    elif key == "distilbert-hf":
        model = tr.DistilBertModel(tr.DistilBertConfig())
    else:
        return (randomize_constants(tr.ViTModel(tr.ViTConfig())), (torch.randn(1, 3, 224, 224),),
                ["pixel_values"])
    randomize_constants(model)
    ids = torch.randint(0, 1000, (1, seq))
    mask = torch.ones(1, seq, dtype=torch.int64)
    return model, (ids, mask), ["input_ids", "attention_mask"]


class Unwrap(nn.Module):
    # The tensors of a transformers ModelOutput, so the exporter sees plain outputs.
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, *args):
        return tuple(v for v in self.model(*args, return_dict=False) if v is not None)


builders = {"resnet50-torch": resnet50, "mobilenetv3-torch": mobilenetv3,
            "efficientnet-torch": efficientnet_b0, "yolo-torch": YoloN}
if key in builders:
    size = 640 if key == "yolo-torch" else 224
    export(builders[key](), (torch.randn(1, 3, size, size),), ["input"])
else:
    model, args, names = hf(key)
    model.config._attn_implementation = "eager"
    export(Unwrap(model), args, names)
'''


def available_keys() -> list[str]:
    """Every model this machine can make: the torch and transformers ones only when installed."""
    keys = []
    if importlib.util.find_spec("torch") is not None:
        keys += TORCH_MODELS
        if importlib.util.find_spec("transformers") is not None:
            keys += HF_MODELS
    keys += [KERAS_INCEPTION, *LIGHT_MODELS]
    return keys


def light_model_path(key: str) -> Path:
    """Where the onnx package keeps light model ``key``."""
    return Path(onnx.__file__).parent / "backend" / "test" / "data" / "light" / LIGHT_MODELS[key]


def load(key: str, cache_dir: Path) -> onnx.ModelProto:
    """The model ``key``, from the cache or exported now in a child process."""
    if key in LIGHT_MODELS:
        return onnx.load(str(light_model_path(key)))
    if key == KERAS_INCEPTION:
        from benchmarks import keras_models

        return keras_models.lowered_model("inceptionv3", cache_dir)
    if key not in TORCH_MODELS and key not in HF_MODELS:
        raise KeyError(f"unknown benchmark model '{key}' (known: {', '.join(available_keys())})")
    path = cache_dir / f"{key}-{EXPORT_VERSION}.onnx"
    if not path.exists():
        cache_dir.mkdir(parents=True, exist_ok=True)
        print(f"exporting {key} ...", file=sys.stderr)
        subprocess.run([sys.executable, "-c", _EXPORT_SCRIPT, key, str(path)], check=True)
    return onnx.load(str(path))


__all__ = ["HF_MODELS", "KERAS_INCEPTION", "LIGHT_MODELS", "TORCH_MODELS", "available_keys",
           "light_model_path", "load"]
