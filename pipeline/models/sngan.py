"""SNGAN-style conditional GAN (Miyato et al. 2018; Miyato & Koyama 2018): the default `sngan` arch.

Generator: residual up-blocks with class-conditional BatchNorm (per-class gain and bias).
Discriminator: spectral-norm residual down-blocks, global sum pooling, and a projection head
logit = w.h + embed(y).h. Built by `pipeline.models.gans.GAN_ARCHS["sngan"]`.
"""

from __future__ import annotations

import logging
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm

from pipeline.models.geometry import Geometry


log = logging.getLogger("augment")

# base width (channels at full resolution) per size; `light` is sized for 2 CPU cores
WIDTHS = {"light": 16, "base": 64}


def level_channels(width: int, blocks: int) -> list[int]:
    """Channels at each resolution level, coarsest first: width * min(4, 2^(blocks - i))."""
    return [width * min(4, 2 ** (blocks - i)) for i in range(blocks + 1)]


def _bn_affine(bn: nn.BatchNorm2d, gain: Tensor, bias: Tensor) -> tuple[Tensor, Tensor]:
    """(scale, shift) with bn(x) * gain + bias = x * scale + shift in eval mode (running stats)."""
    scale = gain * torch.rsqrt(bn.running_var + bn.eps)
    return scale, bias - bn.running_mean * scale


class ConditionalBatchNorm2d(nn.Module):
    """BatchNorm without its own affine, then a per-class gain (init 1) and bias (init 0).

    `conditioning` c in [0, 1] blends the class in (transitional training, `set_conditioning`):
    gain 1 + c * (gain_y - 1), bias c * bias_y; at 0 every class shares the identity affine. A
    plain attribute, not a buffer: not saved, not averaged by the EMA, 1 in a loaded generator.
    """

    conditioning = 1.0
    # `set_embed_noise`: in training mode, N(0, noise_std^2) drawn from noise_generator is added
    # to each sample's gain and bias (plain attributes too: a loaded generator has none)
    noise_std = 0.0
    noise_generator: torch.Generator | None = None

    def __init__(self, num_features: int, num_classes: int):
        super().__init__()
        self.bn = nn.BatchNorm2d(num_features, affine=False)
        self.gain = nn.Embedding(num_classes, num_features)
        self.bias = nn.Embedding(num_classes, num_features)
        nn.init.ones_(self.gain.weight)
        nn.init.zeros_(self.bias.weight)

    def class_affine(self, y: Tensor) -> tuple[Tensor, Tensor]:
        """(gain, bias) of labels y (B,) -> (B, F) each, as learned (no blending, no noise)."""
        return self.gain(y), self.bias(y)

    def affine(self, y: Tensor) -> tuple[Tensor, Tensor]:
        """(gain, bias) of labels y (B,) -> (B, F) each, with the conditioning blended in."""
        gain, bias = self.class_affine(y)
        if self.conditioning != 1.0:
            gain, bias = 1.0 + self.conditioning * (gain - 1.0), self.conditioning * bias
        if self.training and self.noise_std > 0:
            noise = torch.randn((2, *gain.shape), generator=self.noise_generator).to(gain.device, gain.dtype)
            gain, bias = gain + self.noise_std * noise[0], bias + self.noise_std * noise[1]
        return gain, bias

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        bn = self.bn
        gain, bias = self.affine(y)
        if self.training or not bn.track_running_stats:
            return bn(x) * gain[:, :, None, None] + bias[:, :, None, None]
        # eval: normalising with the running statistics and the class's gain and bias is one
        # per-(sample, channel) affine, x * scale + shift: a single pass over x instead of four
        scale, shift = _bn_affine(bn, gain, bias)
        return torch.addcmul(shift[:, :, None, None], x, scale[:, :, None, None])


class GBlock(nn.Module):
    """x -> CBN-ReLU-up2-conv3 -> CBN-ReLU-conv3, plus conv1-up2 shortcut: (B,i,h,w) -> (B,o,2h,2w).

    The shortcut's 1x1 conv runs before the nearest 2x upsampling: the same values as after it
    (each output pixel copies one input pixel), on a quarter of the pixels.
    """

    def __init__(self, cin: int, cout: int, num_classes: int, norm: Callable[[int], nn.Module] | None = None):
        """`norm(features)` builds each conditional BatchNorm (default: ConditionalBatchNorm2d on
        the labels; `pipeline.models.biggan` passes one on a class-and-noise vector instead)."""
        super().__init__()
        norm = norm or (lambda features: ConditionalBatchNorm2d(features, num_classes))
        self.bn1 = norm(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.bn2 = norm(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1)

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        h = F.interpolate(F.relu(self.bn1(x, y)), scale_factor=2.0, mode="nearest")
        h = self.conv2(F.relu(self.bn2(self.conv1(h), y)))
        return h + F.interpolate(self.skip(x), scale_factor=2.0, mode="nearest")


def _crop(h: Tensor, geo: Geometry) -> Tensor:
    """The centre geo.height x geo.width of the generator's output grid (start * 2^blocks a side)."""
    top = (h.shape[2] - geo.height) // 2
    left = (h.shape[3] - geo.width) // 2
    return h[:, :, top : top + geo.height, left : left + geo.width]


def to_image(h: Tensor, out_bn: nn.Module, out_conv: nn.Module, geo: Geometry) -> Tensor:
    """The last block's features -> images in [-1, 1]: BatchNorm, ReLU, the output conv, tanh, cropped
    to the geometry (the generator's tail; `biggan.HierGenerator` ends the same way)."""
    return _crop(torch.tanh(out_conv(F.relu(out_bn(h)))), geo)


class Generator(nn.Module):
    """z (B, z_dim), y (B,) -> (B, C, H, W) in [-1, 1]."""

    def __init__(self, geo: Geometry, num_classes: int, z_dim: int, width: int):
        super().__init__()
        ch = level_channels(width, geo.blocks)
        self.geo = geo
        self.fc = nn.Linear(z_dim, ch[0] * geo.start_h * geo.start_w)
        self.blocks = nn.ModuleList(GBlock(ch[i], ch[i + 1], num_classes) for i in range(geo.blocks))
        self.out_bn = nn.BatchNorm2d(ch[-1])
        self.out_conv = nn.Conv2d(ch[-1], geo.channels, 3, padding=1)

    def forward(self, z: Tensor, y: Tensor) -> Tensor:
        g = self.geo
        h = self.fc(z).view(z.shape[0], -1, g.start_h, g.start_w)  # (ch[0]) x start_h x start_w
        # the view is NCHW; the blocks run in channels_last (`prepare_module`), and left in NCHW the
        # first block's upsampling and both its convolutions each copy their input to channels_last
        # (the 28x28 bf16 forward measured 1.56x faster with this one small copy instead)
        h = h.contiguous(memory_format=torch.channels_last)
        for block in self.blocks:
            h = block(h, y)  # channels halve (down to width), sides double
        return to_image(h, self.out_bn, self.out_conv, g)  # C x start*2^blocks, cropped

    @torch.no_grad()
    def for_class(self, class_index: int, dtype: torch.dtype | None = None) -> "ClassGenerator":
        """This generator's eval-mode forward for samples of one class, fused (see ClassGenerator).

        Built from the current weights and running statistics (in fp32 for an fp32 generator),
        then cast to `dtype` (None: fp32); it costs about a millisecond, so build one per class
        and run many batches through it.
        """
        return ClassGenerator(self, class_index, dtype or torch.float32)


def _scaled_conv(conv: nn.Conv2d, scale: Tensor, shift: Tensor) -> tuple[Tensor, Tensor]:
    """(weight, bias) of conv(x) * scale + shift, per output channel, as one convolution."""
    return conv.weight * scale[:, None, None, None], conv.bias * scale + shift


# oneDNN convolutions with the ReLU or residual sum applied as they write their output (the ops
# torch.compile's CPU backend emits); where missing, plain conv2d and separate element-wise ops
_FUSED_CONV = torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_convolution_pointwise")
_fused_failed: list[str] = []  # the first error of the fused op on this machine, once it failed


def fused_conv(x: Tensor, weight: Tensor, bias: Tensor, relu: bool = False, add: Tensor | None = None,
               fused: bool | None = None) -> Tensor:
    """relu?(conv2d(x, weight, bias, 'same' padding) + add?), in one oneDNN call on the CPU.

    `fused`: None picks the oneDNN op on the CPU when torch has it; False forces the plain ops
    (CUDA always takes them). Both give the same values up to float rounding (tested).
    """
    if fused is None:
        fused = _FUSED_CONV and x.device.type == "cpu" and not _fused_failed
    pad = [weight.shape[-1] // 2] * 2
    if fused:
        ones = [1, 1]
        try:
            if add is None:
                return torch.ops.mkldnn._convolution_pointwise(
                    x, weight, bias, pad, ones, ones, 1, "relu" if relu else "none", [None], "")
            return torch.ops.mkldnn._convolution_pointwise.binary(
                x, add, weight, bias, pad, ones, ones, 1, "add", None, "relu" if relu else None, [None], "")
        except RuntimeError as e:  # an internal op: a CPU or dtype this torch build lacks a kernel for
            if not _fused_failed:
                _fused_failed.append(str(e).splitlines()[0][:200])
                log.warning("oneDNN's fused convolution failed here (%s); using plain conv2d from now on "
                            "(same values, slower)", _fused_failed[0])
    h = F.conv2d(x, weight, bias, padding=pad)
    if add is not None:
        h = h + add
    return F.relu(h) if relu else h


class ClassGenerator(nn.Module):
    """`Generator.forward` in eval mode with every sample of one class: z (B, z_dim) -> images.

    With the class fixed, each conditional BatchNorm is one per-channel affine, so:
    - a block's second CBN (after conv1) is folded into conv1's weights and bias;
    - the output BatchNorm, which only sees the last block's output, into that block's conv2 and
      shortcut (conv2 gets the shift);
    - ReLUs after convolutions and each block's residual sum are applied by the convolution
      itself (`fused_conv`): conv1+ReLU, conv2+shortcut(+ReLU before the output conv);
    - fc's output rows are reordered so its output is channels_last without a copy.
    Only the first CBN of each block stays a separate pass: the shortcut needs the block's input
    without it. The output conv's tanh stays separate too: oneDNN's fused bf16 tanh measured 3x
    slower than the plain conv followed by torch.tanh. Same values as `Generator` up to float
    rounding: within 1e-5 in fp32 (tested); in bf16 the weights are rounded after folding.
    """

    def __init__(self, G: Generator, class_index: int, dtype: torch.dtype):
        super().__init__()
        if not 0 <= class_index < G.blocks[0].bn1.gain.num_embeddings:
            raise ValueError(f"class_index {class_index} out of range for {G.blocks[0].bn1.gain.num_embeddings} classes")
        self.geo = geo = G.geo
        c = int(class_index)

        def put(t: Tensor) -> Tensor:
            t = t.detach().to(dtype)
            return t.contiguous(memory_format=torch.channels_last) if t.dim() == 4 else t.contiguous()

        # fc rows c*HW + p -> p*C + c: fc(z).view(B, H, W, C) is then the start grid in NHWC order
        ch0, hw = G.fc.out_features // (geo.start_h * geo.start_w), geo.start_h * geo.start_w
        order = torch.arange(ch0 * hw, device=G.fc.weight.device).view(ch0, hw).t().reshape(-1)
        self.fc_w, self.fc_b = put(G.fc.weight[order]), put(G.fc.bias[order])
        ob = G.out_bn
        out_scale, out_shift = _bn_affine(ob, ob.weight, ob.bias)
        self.blocks: list[tuple[Tensor, ...]] = []
        last = len(G.blocks) - 1
        y = torch.tensor([c], device=G.fc.weight.device)
        for i, b in enumerate(G.blocks):
            s1, t1 = _bn_affine(b.bn1.bn, *(t[0] for t in b.bn1.affine(y)))
            w1, b1 = _scaled_conv(b.conv1, *_bn_affine(b.bn2.bn, *(t[0] for t in b.bn2.affine(y))))
            w2, b2, ws, bs = b.conv2.weight, b.conv2.bias, b.skip.weight, b.skip.bias
            if i == last:
                w2, b2 = _scaled_conv(b.conv2, out_scale, out_shift)
                ws, bs = _scaled_conv(b.skip, out_scale, torch.zeros_like(out_shift))
            self.blocks.append(tuple(put(t) for t in (s1.view(1, -1, 1, 1), t1.view(1, -1, 1, 1), w1, b1, w2, b2, ws, bs)))
        self.out_w, self.out_b = put(G.out_conv.weight), put(G.out_conv.bias)
        self.dtype = dtype

    def forward(self, z: Tensor, fused: bool | None = None) -> Tensor:
        g = self.geo
        h = F.linear(z.to(self.dtype), self.fc_w, self.fc_b).view(len(z), g.start_h, g.start_w, -1).permute(0, 3, 1, 2)
        last = len(self.blocks) - 1
        for i, (s1, t1, w1, b1, w2, b2, ws, bs) in enumerate(self.blocks):
            a = F.interpolate(F.relu(torch.addcmul(t1, h, s1)), scale_factor=2.0, mode="nearest")
            a = fused_conv(a, w1, b1, relu=True, fused=fused)
            shortcut = F.interpolate(F.conv2d(h, ws, bs), scale_factor=2.0, mode="nearest")
            h = fused_conv(a, w2, b2, relu=i == last, add=shortcut, fused=fused)
        return _crop(torch.tanh(F.conv2d(h, self.out_w, self.out_b, padding=1)), g)


class DBlock(nn.Module):
    """Spectral-norm residual block: (B,i,h,w) -> (B,o,h/2,w/2) when `down`, else same size.

    `first` is the input block: no ReLU before its first conv (the input is an image) and its
    shortcut pools before the 1x1 conv.
    """

    def __init__(self, cin: int, cout: int, down: bool, first: bool = False):
        super().__init__()
        self.down, self.first = down, first
        self.conv1 = spectral_norm(nn.Conv2d(cin, cout, 3, padding=1))
        self.conv2 = spectral_norm(nn.Conv2d(cout, cout, 3, padding=1))
        self.skip = spectral_norm(nn.Conv2d(cin, cout, 1)) if (cin != cout or down) else None

    def forward(self, x: Tensor) -> Tensor:
        h = x if self.first else F.relu(x)
        h = self.conv2(F.relu(self.conv1(h)))
        if self.down:
            h = F.avg_pool2d(h, 2)
        s = x
        if self.first:
            s = self.skip(F.avg_pool2d(s, 2) if self.down else s)
        elif self.skip is not None:
            s = self.skip(s)
            s = F.avg_pool2d(s, 2) if self.down else s
        return h + s


class Discriminator(nn.Module):
    """x (B, C, H, W), y (B,) -> logits (B,) = linear(h) + <embed(y), h>, h = sum-pooled features.

    With `aux_classifier` = n heads, `D(x, y, classes=True)` also returns class logits (B, n * K)
    from a linear head on the same features (AC-GAN style; `train_gan.aux_weight` trains it on
    real images, and a second head, `aux_twin`, on the fakes).
    """

    conditioning = 1.0  # c in [0, 1]: logits = linear(h) + c * <embed(y), h> (see `set_conditioning`)

    def __init__(self, geo: Geometry, num_classes: int, width: int, aux_classifier: int = 0):
        super().__init__()
        # mirror the generator: full-resolution width first, downsample to the start grid
        ch = level_channels(width, geo.blocks)[::-1]
        layers = [DBlock(geo.channels, ch[0], down=True, first=True)]
        layers += [DBlock(ch[i], ch[i + 1], down=True) for i in range(geo.blocks - 1)]
        layers.append(DBlock(ch[geo.blocks - 1], ch[geo.blocks], down=False))
        self.blocks = nn.Sequential(*layers)
        self.fc = spectral_norm(nn.Linear(ch[-1], 1))
        self.embed = spectral_norm(nn.Embedding(num_classes, ch[-1]))
        self.classifier = nn.Linear(ch[-1], num_classes * aux_classifier) if aux_classifier else None

    def forward(self, x: Tensor, y: Tensor, classes: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        h = F.relu(self.blocks(x)).sum(dim=(2, 3))  # (B, ch[-1])
        projection = (self.embed(y) * h).sum(dim=1)
        if self.conditioning != 1.0:
            projection = self.conditioning * projection
        logits = self.fc(h).squeeze(1) + projection
        return (logits, self.classifier(h)) if classes else logits


def set_conditioning(module: nn.Module, strength: float) -> None:
    """Set how much the class conditions `module` (a generator or discriminator of this arch):
    1 = fully (the default, and always in a loaded generator), 0 = not at all (one shared
    affine in G, no projection term in D). Transitional training (Shahbazi et al. 2022) raises
    it from 0 to 1, so the rare classes start from what all the images share."""
    for m in module.modules():
        if isinstance(m, (ConditionalBatchNorm2d, Discriminator)):
            m.conditioning = float(strength)


def set_embed_noise(G: nn.Module, std: float, generator: torch.Generator) -> None:
    """Noise augmentation of G's class embeddings (the first half of NoisyTwins, Rangwani et al.
    2023): while G trains, each sample's class gains and biases in every conditional BatchNorm get
    N(0, std^2) noise from `generator`, so a rare class's few embeddings cover a neighbourhood
    rather than a point. Eval mode (the EMA generator, sampling) never adds noise."""
    for m in G.modules():
        if isinstance(m, ConditionalBatchNorm2d):
            m.noise_std, m.noise_generator = float(std), generator


def class_parameters(G: nn.Module) -> list[Tensor]:
    """G's class-conditional values, each (num_classes, F): every conditional BatchNorm's gains
    less 1 (their neutral value) and its biases; what gSR (`train_gan.gsr_weight`) regularises."""
    out: list[Tensor] = []
    for m in G.modules():
        if isinstance(m, ConditionalBatchNorm2d):
            out += [m.gain.weight - 1.0, m.bias.weight]
    return out


def build(
    geo: Geometry, num_classes: int, z_dim: int, width: int, aux_classifier: int = 0
) -> tuple[nn.Module, nn.Module]:
    """(Generator, Discriminator) for `geo`; see `pipeline.models.gans.GanArch.build`."""
    return Generator(geo, num_classes, z_dim, width), Discriminator(geo, num_classes, width, aux_classifier)
