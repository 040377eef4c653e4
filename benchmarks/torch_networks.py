"""The PyTorch networks of the benchmark suite, built here (random weights, nothing downloaded).

Imported only by :mod:`benchmarks.torch_exports` in a child process: it needs torch (the ``bench``
extra). Convolutional networks users deploy: bottleneck ResNet-50, MobileNetV3-Large,
EfficientNet-B0, a YOLOv8n-style detector backbone and neck, a DeepLabV3-style segmentation network
(dilated ResNet stages, atrous spatial pyramid pooling, bilinear upsampling) and a diffusion-style
UNet (timestep embedding, GroupNorm + SiLU residual blocks, self-attention at the low resolutions,
skip concatenations).
"""

import math

import torch
from torch import nn
from torch.nn import functional


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



class DilatedBottleneck(nn.Module):
    def __init__(self, cin, mid, dilation):
        super().__init__()
        self.body = nn.Sequential(conv_bn(cin, mid), dilated(mid, mid, dilation), conv_bn(mid, mid * 4, act=None))
        self.down = conv_bn(cin, mid * 4, act=None) if cin != mid * 4 else None
        self.relu = nn.ReLU()

    def forward(self, x):
        return self.relu(self.body(x) + (x if self.down is None else self.down(x)))


def dilated(cin, cout, dilation):
    return nn.Sequential(nn.Conv2d(cin, cout, 3, 1, dilation, dilation=dilation, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU())


class Aspp(nn.Module):
    # Atrous spatial pyramid pooling: 1x1, three dilated 3x3 and an image-pooling branch.
    def __init__(self, cin, cout=256, rates=(6, 12, 18)):
        super().__init__()
        self.branches = nn.ModuleList([conv_bn(cin, cout), *(dilated(cin, cout, r) for r in rates)])
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), conv_bn(cin, cout))
        self.project = conv_bn(cout * (len(rates) + 2), cout)

    def forward(self, x):
        pooled = functional.interpolate(self.pool(x), size=x.shape[-2:], mode="bilinear",
                                        align_corners=False)
        return self.project(torch.cat([b(x) for b in self.branches] + [pooled], 1))


class DeepLab(nn.Module):
    # DeepLabV3 on a ResNet-style backbone at output stride 8 (two dilated stages), 21 classes.
    def __init__(self, classes=21):
        super().__init__()
        layers = [conv_bn(3, 64, 7, 2), nn.MaxPool2d(3, 2, 1), Bottleneck(64, 64, 1),
                  Bottleneck(256, 64, 1), Bottleneck(256, 128, 2), Bottleneck(512, 128, 1),
                  DilatedBottleneck(512, 256, 2), DilatedBottleneck(1024, 256, 2),
                  DilatedBottleneck(1024, 512, 4)]
        self.backbone = nn.Sequential(*layers)
        self.head = nn.Sequential(Aspp(2048), conv_bn(256, 256, 3), nn.Conv2d(256, classes, 1))

    def forward(self, x):
        logits = self.head(self.backbone(x))
        return functional.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)


def timestep_embedding(t, dim):
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32) / half)
    angles = t[:, None].float() * freqs[None]
    return torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)


class ResBlock(nn.Module):
    def __init__(self, cin, cout, temb):
        super().__init__()
        self.norm1, self.conv1 = nn.GroupNorm(32, cin), nn.Conv2d(cin, cout, 3, padding=1)
        self.temb = nn.Linear(temb, cout)
        self.norm2, self.conv2 = nn.GroupNorm(32, cout), nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x, emb):
        h = self.conv1(functional.silu(self.norm1(x)))
        h = h + self.temb(functional.silu(emb))[:, :, None, None]
        h = self.conv2(functional.silu(self.norm2(h)))
        return self.skip(x) + h


class SelfAttention2d(nn.Module):
    # Multi-head self-attention over the positions of a feature map, written out as diffusers'
    # attention processor computes it (nn.MultiheadAttention's fused inference path does not export
    # with the legacy exporter).
    def __init__(self, channels, heads=4):
        super().__init__()
        self.norm, self.heads = nn.GroupNorm(32, channels), heads
        self.q, self.k, self.v = (nn.Linear(channels, channels) for _ in range(3))
        self.out = nn.Linear(channels, channels)

    def forward(self, x):
        b, c, h, w = x.shape
        tokens = self.norm(x).flatten(2).transpose(1, 2)

        def split(t):
            return t.reshape(b, h * w, self.heads, c // self.heads).transpose(1, 2)

        q, k, v = split(self.q(tokens)), split(self.k(tokens)), split(self.v(tokens))
        weights = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(c // self.heads), dim=-1)
        merged = (weights @ v).transpose(1, 2).reshape(b, h * w, c)
        return x + self.out(merged).transpose(1, 2).reshape(b, c, h, w)


class UNet(nn.Module):
    # A diffusion-style UNet on a 4-channel 32x32 latent: channels 64/128/256, attention at 16x16
    # and 8x8, one residual block per level and skip concatenations on the way up.
    def __init__(self, channels=(64, 128, 256), temb=256):
        super().__init__()
        self.temb = nn.Sequential(nn.Linear(channels[0], temb), nn.SiLU(), nn.Linear(temb, temb))
        self.stem = nn.Conv2d(4, channels[0], 3, padding=1)
        self.down, self.down_attention, self.downsample = nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
        cin = channels[0]
        for level, c in enumerate(channels):
            self.down.append(ResBlock(cin, c, temb))
            self.down_attention.append(SelfAttention2d(c) if level > 0 else nn.Identity())
            self.downsample.append(nn.Conv2d(c, c, 3, 2, 1) if level < len(channels) - 1 else nn.Identity())
            cin = c
        self.mid = ResBlock(cin, cin, temb)
        self.mid_attention = SelfAttention2d(cin)
        self.up, self.up_attention = nn.ModuleList(), nn.ModuleList()
        for level, c in reversed(list(enumerate(channels))):
            self.up.append(ResBlock(cin + c, c, temb))
            self.up_attention.append(SelfAttention2d(c) if level > 0 else nn.Identity())
            cin = c
        self.out = nn.Sequential(nn.GroupNorm(32, cin), nn.SiLU(), nn.Conv2d(cin, 4, 3, padding=1))
        self.base = channels[0]

    def forward(self, sample, timestep):
        emb = self.temb(timestep_embedding(timestep, self.base))
        h = self.stem(sample)
        skips = []
        for block, attention, down in zip(self.down, self.down_attention, self.downsample):
            h = attention(block(h, emb))
            skips.append(h)
            h = down(h)
        h = self.mid_attention(self.mid(h, emb))
        for block, attention in zip(self.up, self.up_attention):
            skip = skips.pop()
            if h.shape[-1] != skip.shape[-1]:
                h = functional.interpolate(h, scale_factor=2.0, mode="nearest")
            h = attention(block(torch.cat([h, skip], 1), emb))
        return self.out(h)
