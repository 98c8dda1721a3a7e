"""GAN architectures: output shapes and ranges for every arch, channel count and size; conditioning."""

from __future__ import annotations

import pytest
import torch

from pipeline.models import GAN_ARCHS
from pipeline.models.gans import plan_geometry

SHAPES = [(c, s, s) for c in (1, 3) for s in (8, 28, 32)]


@pytest.mark.parametrize("arch", sorted(GAN_ARCHS))
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}x{s[2]}")
def test_shapes_and_range(arch, shape):
    torch.manual_seed(0)
    G, D = GAN_ARCHS[arch].build(shape, num_classes=5, z_dim=16, size="light")
    z, y = torch.randn(3, 16), torch.tensor([0, 2, 4])
    x = G(z, y)
    assert x.shape == (3, *shape)
    assert x.min() >= -1 and x.max() <= 1
    logits = D(x, y)
    assert logits.shape == (3,) and torch.isfinite(logits).all()
    assert (G.z_dim, G.num_classes, G.image_shape) == (16, 5, shape)


@pytest.mark.parametrize("arch", sorted(GAN_ARCHS))
def test_odd_and_large_sizes(arch):
    for shape in [(1, 9, 13), (3, 64, 64)]:
        G, D = GAN_ARCHS[arch].build(shape, num_classes=2, z_dim=8, size="light")
        x = G(torch.randn(2, 8), torch.tensor([0, 1]))
        assert x.shape == (2, *shape) and D(x, torch.tensor([0, 1])).shape == (2,)


@pytest.mark.parametrize("arch", sorted(GAN_ARCHS))
def test_conditioning_and_gradients_reach_every_parameter(arch):
    torch.manual_seed(0)
    G, D = GAN_ARCHS[arch].build((1, 16, 16), num_classes=3, z_dim=8, size="light")
    # make label embeddings non-trivial (sngan's conditional BN starts at gain 1, bias 0)
    with torch.no_grad():
        for name, p in G.named_parameters():
            if "gain" in name or "bias.weight" in name:
                p.add_(torch.randn_like(p) * 0.5)
    G.eval()
    z = torch.randn(1, 8).repeat(3, 1)
    x = G(z, torch.tensor([0, 1, 2]))
    assert not torch.allclose(x[0], x[1]) and not torch.allclose(x[1], x[2])
    G.train()
    x = G(torch.randn(4, 8), torch.tensor([0, 1, 2, 0]))
    D(x, torch.tensor([0, 1, 2, 0])).sum().backward()
    for module in (G, D):
        missing = [n for n, p in module.named_parameters() if p.grad is None]
        assert not missing, f"{arch}: no gradient for {missing}"


def test_sizes_and_width_change_capacity():
    arch = GAN_ARCHS["sngan"]
    n = {}
    for size, width in [("light", None), ("base", None), ("light", 8)]:
        G, _ = arch.build((1, 28, 28), 10, 64, size, width)
        n[(size, width)] = sum(p.numel() for p in G.parameters())
    assert n[("light", 8)] < n[("light", None)] < n[("base", None)]


def test_bad_arguments():
    arch = GAN_ARCHS["sngan"]
    with pytest.raises(ValueError, match="valid: light, base"):
        arch.build((1, 8, 8), 2, 8, "huge")
    with pytest.raises(ValueError, match="1 or 3 channels"):
        arch.build((4, 8, 8), 2, 8)
    with pytest.raises(ValueError, match="width must be >= 4"):
        arch.build((1, 8, 8), 2, 8, "light", width=2)


@pytest.mark.parametrize(
    "side, blocks, start", [(8, 1, 4), (16, 2, 4), (28, 2, 7), (32, 3, 4), (9, 1, 5), (64, 4, 4)]
)
def test_geometry(side, blocks, start):
    geo = plan_geometry((1, side, side))
    assert (geo.blocks, geo.start_h) == (blocks, start)
    assert side <= start * 2**blocks < side + 2**blocks


@pytest.mark.parametrize("arch", [a for a in sorted(GAN_ARCHS) if GAN_ARCHS[a].aux_classifier])
def test_aux_class_head(arch):
    torch.manual_seed(0)
    G, D = GAN_ARCHS[arch].build((1, 28, 28), num_classes=4, z_dim=8, size="light", aux_classifier=True)
    y = torch.tensor([0, 3, 1])
    x = G(torch.randn(3, 8), y)
    logits, class_logits = D(x, y, classes=True)
    assert logits.shape == (3,) and class_logits.shape == (3, 4)
    D.eval()  # (spectral norm's power iteration steps on every training-mode forward)
    with torch.no_grad():
        assert torch.equal(D(x, y, classes=True)[0], D(x, y))  # the head adds an output, never changes the logit
    (logits.sum() + class_logits.sum()).backward()
    assert all(p.grad is not None for p in D.parameters())
    _, plain = GAN_ARCHS[arch].build((1, 28, 28), num_classes=4, z_dim=8, size="light")
    assert plain.classifier is None  # no unused parameters without it (DDP would refuse them)
    _, twin = GAN_ARCHS[arch].build((1, 28, 28), num_classes=4, z_dim=8, size="light", aux_classifier=2)
    assert twin(x.detach(), y, classes=True)[1].shape == (3, 8)  # TAC-GAN: the class head, then its twin


def test_aux_class_head_refused_by_archs_without_one():
    with pytest.raises(ValueError, match="no auxiliary class head; use one of: sngan, sngan_hier, dcgan"):
        GAN_ARCHS["concat"].build((1, 8, 8), 2, 8, aux_classifier=True)


def test_conditional_batchnorm_eval_is_the_textbook_formula():
    """Eval mode fuses normalisation and the class affine; it must equal (x - mean) / sqrt(var + eps)
    * gain[y] + bias[y] computed by hand, and train mode must still use the batch statistics."""
    from pipeline.models.sngan import ConditionalBatchNorm2d

    g = torch.Generator().manual_seed(0)
    cbn = ConditionalBatchNorm2d(3, num_classes=2)
    with torch.no_grad():
        cbn.gain.weight.copy_(torch.tensor([[1.0, 2.0, -0.5], [0.5, 1.5, 3.0]]))
        cbn.bias.weight.copy_(torch.tensor([[0.0, 1.0, -1.0], [2.0, 0.0, 0.5]]))
        cbn.bn.running_mean.copy_(torch.tensor([0.5, -1.0, 2.0]))
        cbn.bn.running_var.copy_(torch.tensor([4.0, 0.25, 1.0]))
    x, y = torch.randn(4, 3, 2, 2, generator=g), torch.tensor([0, 1, 1, 0])
    mean, std = cbn.bn.running_mean.view(1, 3, 1, 1), torch.sqrt(cbn.bn.running_var.view(1, 3, 1, 1) + cbn.bn.eps)
    expect = (x - mean) / std * cbn.gain.weight[y][:, :, None, None] + cbn.bias.weight[y][:, :, None, None]
    torch.testing.assert_close(cbn.eval()(x, y), expect, rtol=1e-6, atol=1e-6)
    batch_mean = x.mean(dim=(0, 2, 3), keepdim=True)
    batch_std = torch.sqrt(x.var(dim=(0, 2, 3), unbiased=False, keepdim=True) + cbn.bn.eps)
    expect_train = (x - batch_mean) / batch_std * cbn.gain.weight[y][:, :, None, None] + cbn.bias.weight[y][:, :, None, None]
    torch.testing.assert_close(cbn.train()(x, y), expect_train, rtol=1e-5, atol=1e-5)


def test_generator_block_shortcut_equals_upsample_then_conv():
    """The 1x1 shortcut runs before the nearest upsampling; the values equal conv(up(x)) exactly."""
    import torch.nn.functional as F

    from pipeline.models.sngan import GBlock

    torch.manual_seed(0)
    block = GBlock(4, 2, num_classes=3).eval()
    x = torch.randn(2, 4, 5, 5)
    up_first = block.skip(F.interpolate(x, scale_factor=2.0, mode="nearest"))
    conv_first = F.interpolate(block.skip(x), scale_factor=2.0, mode="nearest")
    torch.testing.assert_close(conv_first, up_first, rtol=0, atol=1e-6)
    assert block(x, torch.tensor([0, 2])).shape == (2, 2, 10, 10)


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32)])
def test_sngan_blocks_get_channels_last_input(shape):
    """Prepared as the pipeline prepares it (channels_last), the generator hands every block a
    channels_last tensor: an NCHW start grid made each op of the first block copy its input."""
    from pipeline.device import prepare_module

    G, _ = GAN_ARCHS["sngan"].build(shape, 3, 8, "light")
    G = prepare_module(G, torch.device("cpu")).eval()
    seen = []
    for block in G.blocks:
        block.register_forward_pre_hook(
            lambda _m, args: seen.append(args[0].is_contiguous(memory_format=torch.channels_last))
        )
    with torch.no_grad():
        G(torch.randn(4, 8), torch.tensor([0, 1, 2, 0]))
    assert seen == [True] * len(G.blocks)


def _trained_looking(G):
    """Running statistics, BN affines and class gains/biases away from their init (which would
    make every fold trivial)."""
    with torch.no_grad():
        for m in G.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.5, 2)
                if m.affine:
                    m.weight.uniform_(0.5, 1.5)
                    m.bias.uniform_(-0.5, 0.5)
            elif isinstance(m, torch.nn.Embedding):
                m.weight.uniform_(-1.5, 1.5)
    return G


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32), (3, 20, 36)])
@pytest.mark.parametrize("fused", [None, False])
def test_class_generator_equals_the_generator_for_its_class(shape, fused):
    """ClassGenerator folds the class's BatchNorms into the convolutions and fuses ReLUs and sums:
    in fp32 it must give Generator's eval output for every class (fused oneDNN ops or plain ones),
    and leave G's own weights alone."""
    from pipeline.device import prepare_module

    torch.manual_seed(0)
    G = prepare_module(_trained_looking(GAN_ARCHS["sngan"].build(shape, 4, 16, "light")[0]), torch.device("cpu"))
    G.eval()
    before = {k: v.clone() for k, v in G.state_dict().items()}
    z = torch.randn(9, 16)
    with torch.no_grad():
        for c in range(4):
            out = G.for_class(c)(z, fused=fused)
            torch.testing.assert_close(out, G(z, torch.full((9,), c)), rtol=0, atol=1e-5)
    assert all(torch.equal(v, G.state_dict()[k]) for k, v in before.items())
    with pytest.raises(ValueError, match="class_index 4 out of range for 4 classes"):
        G.for_class(4)


def test_class_generator_in_bf16_is_near_fp32_and_runs_in_bf16():
    torch.manual_seed(0)
    G = _trained_looking(GAN_ARCHS["sngan"].build((1, 28, 28), 3, 16, "light")[0]).eval()
    net = G.for_class(1, torch.bfloat16)
    assert {t.dtype for t in net.blocks[0]} == {torch.bfloat16} and G.fc.weight.dtype == torch.float32
    z = torch.randn(16, 16)
    with torch.no_grad():
        out = net(z)
        assert out.dtype == torch.bfloat16
        assert (out.float() - G(z, torch.full((16,), 1))).abs().max() < 0.05


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("with_add", [False, True])
def test_fused_conv_equals_conv_then_add_then_relu(dtype, relu, with_add):
    from pipeline.models.sngan import fused_conv

    torch.manual_seed(0)
    cl = torch.channels_last
    x = torch.randn(4, 8, 6, 6).to(dtype).contiguous(memory_format=cl)
    w = torch.randn(5, 8, 3, 3).to(dtype).contiguous(memory_format=cl)
    b = torch.randn(5).to(dtype)
    add = torch.randn(4, 5, 6, 6).to(dtype).contiguous(memory_format=cl) if with_add else None
    expect = torch.nn.functional.conv2d(x.double(), w.double(), b.double(), padding=1)
    if with_add:
        expect = expect + add.double()
    if relu:
        expect = expect.clamp_min(0)
    tol = 1e-4 if dtype == torch.float32 else 0.25  # bf16: 8 bits of mantissa on sums of ~72 terms
    for fused in (None, False):
        out = fused_conv(x, w, b, relu=relu, add=add, fused=fused)
        assert out.dtype == dtype and out.shape == (4, 5, 6, 6)
        torch.testing.assert_close(out.double(), expect, rtol=0, atol=tol)


def test_fused_conv_falls_back_to_plain_ops_once_the_fused_op_fails(monkeypatch, caplog):
    """The oneDNN op is internal to torch: where a build or CPU lacks a kernel for it, generation
    goes on with plain conv2d (same values) and says so once."""
    import logging

    from pipeline.models import sngan

    if not sngan._FUSED_CONV:
        pytest.skip("this torch build has no oneDNN fused convolution")
    calls = []

    class Broken:
        def __call__(self, *args):
            calls.append(1)
            raise RuntimeError("no kernel for this CPU\nsecond line")

        binary = __call__

    monkeypatch.setattr(sngan, "_fused_failed", [])
    monkeypatch.setattr(torch.ops.mkldnn, "_convolution_pointwise", Broken())
    x, w, b = torch.randn(2, 3, 5, 5), torch.randn(4, 3, 3, 3), torch.randn(4)
    expect = torch.relu(torch.nn.functional.conv2d(x, w, b, padding=1))
    with caplog.at_level(logging.WARNING, logger="augment"):
        for _ in range(3):
            torch.testing.assert_close(sngan.fused_conv(x, w, b, relu=True), expect)
    assert len(calls) == 1  # tried once, then plain ops only
    assert [r.getMessage() for r in caplog.records] == [
        "oneDNN's fused convolution failed here (no kernel for this CPU); using plain conv2d from now on "
        "(same values, slower)"
    ]


def test_transitional_conditioning_blends_the_class_into_g_and_d():
    """sngan at conditioning 0 ignores the class (G and D), at 1 is the plain model, and the
    fused class generator follows the blend at any strength."""
    from pipeline.device import prepare_module
    from pipeline.models.sngan import set_conditioning

    torch.manual_seed(0)
    G, D = GAN_ARCHS["sngan"].build((1, 16, 16), 3, 8, "light", aux_classifier=True)
    G = prepare_module(_trained_looking(G), torch.device("cpu")).eval()
    D.eval()  # spectral norm's power iteration would move D's weights at every training-mode call
    z, x = torch.randn(4, 8), torch.rand(4, 1, 16, 16) * 2 - 1
    ys = [torch.full((4,), c) for c in range(3)]
    with torch.no_grad():
        plain_g, plain_d = G(z, ys[1]), D(x, ys[1])
        set_conditioning(G, 0.0)
        set_conditioning(D, 0.0)
        assert all(torch.allclose(G(z, y), G(z, ys[0]), atol=1e-6) for y in ys)
        assert all(torch.equal(D(x, y), D(x, ys[0])) for y in ys)
        assert not torch.allclose(G(z, ys[1]), plain_g, atol=1e-4)
        set_conditioning(G, 0.5)
        for c in range(3):
            torch.testing.assert_close(G.for_class(c)(z), G(z, ys[c]), rtol=0, atol=1e-5)
        set_conditioning(G, 1.0)
        set_conditioning(D, 1.0)
        assert torch.equal(G(z, ys[1]), plain_g) and torch.equal(D(x, ys[1]), plain_d)
    assert "conditioning" not in " ".join(G.state_dict())  # not saved: a loaded generator is fully conditional


# ----------------------------------------------------------------------------- sngan_hier (BigGAN conditioning)


def test_latent_chunks_split_z_evenly_larger_first():
    from pipeline.models.biggan import latent_chunks

    assert latent_chunks(64, 3) == [22, 21, 21] and latent_chunks(64, 4) == [16] * 4 and latent_chunks(5, 5) == [1] * 5
    with pytest.raises(ValueError, match="need z_dim >= 3, got 2"):
        latent_chunks(2, 3)


def test_latent_batchnorm_gain_and_bias_are_linear_in_the_vector_by_hand():
    """gain = 1 + W_g v, bias = W_b v (no BatchNorm affine of its own); at init W = 0: gain 1,
    bias 0, sngan's start; blending and embedding noise act on the result as in sngan."""
    from pipeline.models.biggan import LatentConditionalBatchNorm2d

    cbn = LatentConditionalBatchNorm2d(2, cond_dim=3)
    v = torch.tensor([[1.0, 2.0, 0.0], [0.0, -1.0, 3.0]])
    gain, bias = cbn.affine(v)
    assert torch.equal(gain, torch.ones(2, 2)) and torch.equal(bias, torch.zeros(2, 2))
    with torch.no_grad():
        cbn.gain.weight.copy_(torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.5, 1.0]]))
        cbn.bias.weight.copy_(torch.tensor([[0.0, 1.0, 0.0], [2.0, 0.0, -1.0]]))
    gain, bias = cbn.affine(v)
    assert torch.allclose(gain, torch.tensor([[2.0, 2.0], [1.0, 3.5]]))  # 1 + [1, 1], 1 + [0, -0.5 + 3]
    assert torch.allclose(bias, torch.tensor([[2.0, 2.0], [-1.0, -3.0]]))
    cbn.conditioning = 0.5  # transitional training: gain 1 + c (gain - 1), bias c bias
    gain, bias = cbn.affine(v)
    assert torch.allclose(gain, torch.tensor([[1.5, 1.5], [1.0, 2.25]])) and torch.allclose(bias, torch.tensor([[1.0, 1.0], [-0.5, -1.5]]))
    cbn.train()
    x = torch.randn(2, 2, 3, 3)
    cbn.conditioning = 1.0
    expected = F_bn(x) * torch.tensor([[2.0, 2.0], [1.0, 3.5]])[:, :, None, None] + torch.tensor([[2.0, 2.0], [-1.0, -3.0]])[:, :, None, None]
    assert torch.allclose(cbn(x, v), expected, atol=1e-5)


def F_bn(x):
    """Batch normalisation by hand: per channel over batch and pixels, biased variance, eps 1e-5."""
    mean = x.mean(dim=(0, 2, 3), keepdim=True)
    var = x.var(dim=(0, 2, 3), unbiased=False, keepdim=True)
    return (x - mean) / torch.sqrt(var + 1e-5)


def test_hier_generator_feeds_each_noise_chunk_into_its_own_block():
    """At init (every W 0) only z's first chunk reaches the image; once a block's BatchNorms use
    their vector, its chunk moves the image and the shared embedding separates the classes."""
    torch.manual_seed(0)
    G, _ = GAN_ARCHS["sngan_hier"].build((1, 28, 28), num_classes=3, z_dim=12, size="light", width=4)
    assert G.chunks == [4, 4, 4] and len(G.blocks) == 2
    G.eval()
    z = torch.randn(1, 12)
    later = z.clone()
    later[:, 8:] = torch.randn(1, 4)  # only the last block's chunk differs
    y = torch.tensor([0])
    assert torch.equal(G(z, y), G(later, y)) and torch.equal(G(z, y), G(z, torch.tensor([2])))
    with torch.no_grad():
        for p in (G.blocks[1].bn1.gain.weight, G.blocks[1].bn1.bias.weight):
            p.normal_(0, 0.5)
    assert not torch.allclose(G(z, y), G(later, y))
    assert not torch.allclose(G(z, y), G(z, torch.tensor([2])))
    first = z.clone()
    first[:, 4:8] = torch.randn(1, 4)  # block 0's chunk: its BatchNorms' W are still 0
    assert torch.equal(G(z, y), G(first, y))


def test_hier_class_parameters_are_the_class_part_of_each_affine():
    """gSR's view of sngan_hier: per BatchNorm, shared embedding @ W's class columns (the noise
    chunk at 0), for the gains (less 1) and the biases."""
    from pipeline.models.biggan import SHARED_DIM

    arch = GAN_ARCHS["sngan_hier"]
    G, _ = arch.build((1, 8, 8), num_classes=3, z_dim=8, size="light", width=4)
    with torch.no_grad():
        for p in G.parameters():
            p.normal_()
    params = arch.class_parameters(G)
    assert len(params) == 2 * 2 * len(G.blocks) and all(p.shape[0] == 3 for p in params)
    bn = G.blocks[0].bn1
    v = torch.cat([G.shared.weight, torch.zeros(3, bn.gain.weight.shape[1] - SHARED_DIM)], dim=1)  # chunk at 0
    gain, bias = bn.class_affine(v)
    assert torch.allclose(params[0], gain - 1.0, atol=1e-5) and torch.allclose(params[1], bias, atol=1e-5)
