"""Child process of :mod:`benchmarks.model_suite`: export one network to ONNX.

``python -m benchmarks.torch_exports KEY PATH EXPORTER`` writes the export of network ``KEY`` to
``PATH`` (one file, weights inline). ``EXPORTER`` is ``legacy`` (``torch.onnx.export(dynamo=False,
opset_version=17)``, BatchNorm folded into the convolutions), ``dynamo`` (torch's default
exporter, opset 18) or ``dynamo-eager`` (the same with transformers' eager attention, the
matmul-softmax form the legacy exporter sees). It runs in its own process so torch's memory goes
away with it.

Transformers models are built from their config classes (random weights, nothing downloaded),
sequence length 128, no key/value cache; eager attention for the legacy exporter and
``dynamo-eager``, transformers' default (scaled_dot_product_attention) for ``dynamo``:

* encoders: BERT-base, DistilBERT, ViT-B/16, Swin-T (hierarchical, shifted windows), CLIP's vision
  encoder (6 layers), Whisper's encoder (4 layers, its convolutional front end on 80 x 3000 log-mel
  frames), T5's encoder (4 layers, relative position bias);
* decoder-only language models: GPT-2 (4 layers, Conv1D projections), Llama (4 layers, RMSNorm,
  rotary embeddings, SwiGLU, grouped-query attention with 8 query and 2 key/value heads).
"""

import os
import sys

import torch
from torch import nn

from benchmarks import torch_networks as networks

#: Networks of :mod:`benchmarks.torch_networks`: key -> (builder, input shapes).
CONVNETS = {
    "resnet50-torch": (networks.resnet50, (1, 3, 224, 224)),
    "mobilenetv3-torch": (networks.mobilenetv3, (1, 3, 224, 224)),
    "efficientnet-torch": (networks.efficientnet_b0, (1, 3, 224, 224)),
    "yolo-torch": (networks.YoloN, (1, 3, 640, 640)),
    "deeplab-torch": (networks.DeepLab, (1, 3, 224, 224)),
}
SEQUENCE = 128


def randomize_constants(model):
    """transformers initializes every bias to 0 and every LayerNorm scale to 1; a trained model's
    are neither, and a simplifier that drops "x + 0" would be measured on an artifact."""
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim == 1 and bool((p == p.flatten()[0]).all()):
                p.add_(torch.randn_like(p) * 0.02)
    return model


def text_inputs():
    ids = torch.randint(0, 1000, (1, SEQUENCE))
    return (ids, torch.ones(1, SEQUENCE, dtype=torch.int64)), ["input_ids", "attention_mask"]


def hf(key):
    """(model, example inputs, input names) of transformers model ``key``."""
    import transformers as tr

    if key == "bert-hf":
        return tr.BertModel(tr.BertConfig(), add_pooling_layer=True), *text_inputs()
    if key == "distilbert-hf":
        return tr.DistilBertModel(tr.DistilBertConfig()), *text_inputs()
    if key == "gpt2-hf":
        return tr.GPT2Model(tr.GPT2Config(n_layer=4, use_cache=False)), *text_inputs()
    if key == "llama-hf":
        config = tr.LlamaConfig(hidden_size=512, intermediate_size=1376, num_hidden_layers=4,
                                num_attention_heads=8, num_key_value_heads=2, vocab_size=32000,
                                use_cache=False)
        return tr.LlamaModel(config), *text_inputs()
    if key == "t5-encoder-hf":
        config = tr.T5Config(d_model=512, d_ff=2048, num_layers=4, num_heads=8, use_cache=False)
        return tr.T5EncoderModel(config), *text_inputs()
    image = (torch.randn(1, 3, 224, 224),), ["pixel_values"]
    if key == "vit-hf":
        return tr.ViTModel(tr.ViTConfig()), *image
    if key == "swin-hf":
        return tr.SwinModel(tr.SwinConfig()), *image
    if key == "clip-vision-hf":
        return tr.CLIPVisionModel(tr.CLIPVisionConfig(num_hidden_layers=6)), *image
    if key == "whisper-encoder-hf":
        config = tr.WhisperConfig(encoder_layers=4, decoder_layers=1)
        return tr.WhisperModel(config).get_encoder(), (torch.randn(1, 80, 3000),), ["input_features"]
    raise KeyError(key)


class Unwrap(nn.Module):
    """The tensors of a transformers ModelOutput, so the exporter sees plain outputs; the inputs
    are passed by name (a decoder's second positional argument is its key/value cache)."""

    def __init__(self, model, names):
        super().__init__()
        self.model, self.names = model, names

    def forward(self, *args):
        outputs = self.model(**dict(zip(self.names, args)), return_dict=False)
        return tuple(v for v in outputs if v is not None)


def export(model, args, names, path, exporter):
    """Write ``model``'s export to ``path`` with its weights inline."""
    import onnx

    model = networks.randomize_bn(model).eval()
    tmp = path + ".tmp"
    with torch.no_grad():
        if exporter == "legacy":
            torch.onnx.export(model, args, tmp, dynamo=False, opset_version=17, input_names=names,
                              do_constant_folding=True)
        else:
            torch.onnx.export(model, args, tmp, dynamo=True, input_names=names, external_data=False)
    proto = onnx.load(tmp)
    onnx.save(proto, tmp, save_as_external_data=False)
    os.replace(tmp, path)
    if os.path.exists(tmp + ".data"):
        os.remove(tmp + ".data")


def main(key, path, exporter):
    torch.manual_seed(0)
    if key in CONVNETS:
        builder, shape = CONVNETS[key]
        export(builder(), (torch.randn(*shape),), ["input"], path, exporter)
    elif key == "unet-torch":
        args = (torch.randn(1, 4, 32, 32), torch.tensor([500.0]))
        export(networks.UNet(), args, ["sample", "timestep"], path, exporter)
    else:
        model, args, names = hf(key)
        randomize_constants(model)
        if exporter != "dynamo":
            # The legacy exporter's long-standing form (the rows measured before dynamo existed);
            # dynamo exports keep transformers' default attention (scaled_dot_product_attention).
            model.config._attn_implementation = "eager"
        export(Unwrap(model, names), args, names, path, exporter)


if __name__ == "__main__":
    main(*sys.argv[1:4])
