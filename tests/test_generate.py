"""Sampling per plan: per-sample seeds, batch-size independence, the quality filter, and the shards
it turns into (rows per class, byte-identical files, PNG size and mode)."""

from __future__ import annotations

import io as pyio
import logging
import math

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image
from torch import nn

from pipeline import generate as gen
from pipeline.pixels import to_uint8
from pipeline import loaders, release
from pipeline.data import ImageTable
from pipeline.errors import DataError, TrainingError

NAMES = ["zero", "one", "two", "three"]


class TinyG(nn.Module):
    """z, y -> image through Linear + BatchNorm1d + tanh; weights from an explicit generator.

    BatchNorm makes a sample depend on its batch in train mode, so the tests would notice a
    generator left in train mode; its running statistics are set so eval mode is not the identity.
    """

    def __init__(self, z_dim=8, shape=(1, 6, 6), num_classes=4, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        n = int(np.prod(shape))
        self.shape = shape
        self.embed = nn.Embedding(num_classes, z_dim)
        self.fc = nn.Linear(z_dim, n)
        self.bn = nn.BatchNorm1d(n)
        with torch.no_grad():
            for p in (self.embed.weight, self.fc.weight, self.fc.bias):
                p.copy_(torch.randn(p.shape, generator=g))
            self.bn.running_mean.copy_(torch.randn(n, generator=g))
            self.bn.running_var.copy_(torch.rand(n, generator=g) + 0.5)

    def forward(self, z, y):
        return torch.tanh(self.bn(self.fc(z * (1 + self.embed(y))))).view(len(z), *self.shape)


def tiny_meta(z_dim=8, shape=(1, 6, 6), names=NAMES) -> dict:
    return {"z_dim": z_dim, "image_shape": list(shape), "class_names": list(names), "num_classes": len(names),
            "arch": "tiny", "sha256": "cd" * 32}


def mean_scorer(images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """A deterministic 'probability': the mean brightness mapped to [0, 1]."""
    return (images.mean(dim=(1, 2, 3)) + 1) / 2


# ---- seeds -------------------------------------------------------------------------------------------

def test_sample_seed_is_pinned_and_sensitive_to_every_argument():
    # pinned: a change would silently change every published synthetic dataset
    assert gen.sample_seed(0, 0, 0) == 4856003085362119513
    assert gen.sample_seed(1, 2, 3) == 8689783886075059646
    seeds = {gen.sample_seed(s, c, i) for s in range(3) for c in range(10) for i in range(1000)}
    assert len(seeds) == 30_000
    assert all(0 <= s < 2**63 for s in seeds)
    # no arithmetic aliasing: (c, i) = (0, 10) and (1, 0) differ, as do neighbouring run seeds
    assert gen.sample_seed(0, 0, 10) != gen.sample_seed(0, 1, 0) != gen.sample_seed(1, 0, 0)


def _splitmix64_normals(seed: int, n: int) -> list[float]:
    """The documented noise of one row, one draw at a time in plain Python integers."""
    mask, out, state = 2**64 - 1, [], seed

    def draw():
        nonlocal state
        state = (state + 0x9E3779B97F4A7C15) & mask
        x = state
        x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & mask
        x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & mask
        return ((x ^ (x >> 31)) >> 11) * 2.0**-53

    for _ in range(n):
        u1, u2 = draw(), draw()
        out.append(math.sqrt(-2.0 * math.log(1.0 - u1)) * math.cos(2.0 * math.pi * u2))
    return out


def test_noise_row_depends_on_its_seed_only_and_is_the_documented_stream():
    z = gen.sample_noise([11, 22, 2**63 - 1], 5)
    assert z.dtype == torch.float32 and z.shape == (3, 5)
    np.testing.assert_array_equal(z[1], gen.sample_noise([22], 5)[0])
    for row, seed in zip(z, [11, 22, 2**63 - 1]):  # the largest seed: the uint64 sums wrap, as documented
        np.testing.assert_allclose(row.numpy(), _splitmix64_normals(seed, 5), rtol=1e-6, atol=1e-6)
    # pinned: a change would silently change every published synthetic dataset
    np.testing.assert_allclose(gen.sample_noise([gen.sample_seed(0, 0, 0)], 3)[0].numpy(),
                               _splitmix64_normals(4856003085362119513, 3), rtol=1e-6)


def test_noise_is_standard_normal_and_uncorrelated():
    from scipy import stats

    z = gen.sample_noise([gen.sample_seed(0, c, i) for c in range(10) for i in range(1000)], 64).numpy().astype(float)
    assert abs(z.mean()) < 0.005 and abs(z.std() - 1) < 0.005
    assert stats.kstest(z.ravel(), "norm").pvalue > 0.01
    corr = np.corrcoef(z.T)  # entries of a row, and (through the mean) neighbouring rows, are independent
    assert np.abs(corr[~np.eye(64, dtype=bool)]).max() < 0.05
    assert abs(np.corrcoef(z[:-1, 0], z[1:, 0])[0, 1]) < 0.03


# ---- generate ------------------------------------------------------------------------------------------

def test_rows_per_class_equal_the_plan_and_seeds_are_per_sample():
    plan = {"zero": 0, "one": 5, "three": 70}
    images, labels, seeds, scores = gen.generate(gen.Sampler(TinyG(), tiny_meta(), seed=3), plan, batch_size=16,
                                                 progress=False)
    assert images.shape == (75, 6, 6, 1) and images.dtype == np.uint8
    assert np.bincount(labels, minlength=4).tolist() == [0, 5, 0, 70]
    assert seeds.tolist() == [gen.sample_seed(3, 1, i) for i in range(5)] + [gen.sample_seed(3, 3, i) for i in range(70)]
    assert np.isnan(scores).all()
    assert len(np.unique(images.reshape(75, -1), axis=0)) == 75


@pytest.mark.parametrize("batch_size", [1, 7, 256])
def test_output_is_identical_whatever_the_batch_size(batch_size):
    G, meta, plan = TinyG(), tiny_meta(), {"one": 9, "two": 130}
    ref = gen.generate(gen.Sampler(G, meta, seed=5), plan, batch_size=64, progress=False)
    G.train()  # generate must switch BatchNorm to its running statistics, and restore the mode
    out = gen.generate(gen.Sampler(G, meta, seed=5), plan, batch_size=batch_size, progress=False)
    assert G.training
    for a, b in zip(ref, out):
        np.testing.assert_array_equal(a, b)


def test_ranges_split_across_workers_concatenate_to_the_same_bytes():
    G, meta = TinyG().eval(), tiny_meta()
    sampler = gen.Sampler(G, meta, seed=1, block=64)
    images, _, seeds, _ = gen.generate(sampler, {"two": 150}, batch_size=32, progress=False)
    ranges = [(0, 1), (1, 70), (70, 129), (129, 150)]
    parts = [gen.sample_range(sampler, 2, a, b, quota=150) for a, b in ranges]
    np.testing.assert_array_equal(np.concatenate([p[0] for p in parts]), images)
    np.testing.assert_array_equal(np.concatenate([p[1] for p in parts]), seeds)


def test_a_different_seed_gives_different_images():
    a = gen.generate(gen.Sampler(TinyG(), tiny_meta(), seed=0), {"one": 4}, batch_size=4, progress=False)[0]
    b = gen.generate(gen.Sampler(TinyG(), tiny_meta(), seed=1), {"one": 4}, batch_size=4, progress=False)[0]
    assert not np.array_equal(a, b)


# ---- quality filter --------------------------------------------------------------------------------------

def test_filter_keeps_the_first_samples_above_tau_whatever_the_batch_size():
    G, meta = TinyG(), tiny_meta()
    sampler = gen.Sampler(G, meta, seed=0, scorer=mean_scorer)
    _, _, _, all_scores = gen.generate(sampler, {"one": 400}, batch_size=64, progress=False)
    tau = float(np.quantile(all_scores, 0.6))  # about 40% pass
    expected = np.flatnonzero(all_scores >= tau)[:30]
    runs = []
    for batch_size in (1, 7, 256):
        stats = {}
        out = gen.generate(sampler, {"one": 30}, batch_size=batch_size, keep=gen.ScoreFilter(tau=tau, max_oversample=4.0), progress=False,
                           stats=stats)
        runs.append(out)
        assert stats == {"one": {"quota": 30, "tried": int(expected[-1]) + 1, "accepted": 30, "below_tau": 0}}
    images, labels, seeds, scores = runs[0]
    assert seeds.tolist() == [gen.sample_seed(0, 1, int(i)) for i in expected]
    np.testing.assert_array_equal(scores, all_scores[expected])
    assert (scores >= tau).all() and (labels == 1).all()
    for other in runs[1:]:
        for a, b in zip(runs[0], other):
            np.testing.assert_array_equal(a, b)


def test_filter_that_cannot_fill_keeps_the_best_and_warns(caplog):
    G, meta = TinyG(), tiny_meta()
    sampler = gen.Sampler(G, meta, seed=0, scorer=mean_scorer)
    _, _, _, tried_scores = gen.generate(sampler, {"two": 20}, batch_size=8, progress=False)
    stats = {}
    with caplog.at_level(logging.WARNING, logger="augment"):
        _, _, seeds, scores = gen.generate(sampler, {"two": 10}, batch_size=8, progress=False, stats=stats,
                                           keep=gen.ScoreFilter(tau=1.01, max_oversample=2.0, fill=True))
    assert stats["two"] == {"quota": 10, "tried": 20, "accepted": 0, "below_tau": 10}
    best = np.sort(np.argsort(-tried_scores, kind="stable")[:10])
    np.testing.assert_array_equal(scores, tried_scores[best])
    assert seeds.tolist() == [gen.sample_seed(0, 2, int(i)) for i in best]
    assert "class 'two': only 0 of 10 samples reached score >= 1.01 after 20 tries" in caplog.text


def test_filter_without_fill_keeps_only_the_accepted_samples(caplog):
    G, meta = TinyG(), tiny_meta()
    sampler = gen.Sampler(G, meta, seed=0, scorer=mean_scorer)
    _, _, _, tried = gen.generate(sampler, {"one": 40, "two": 40}, batch_size=8, progress=False)
    tau = float(np.quantile(tried, 0.8))
    passing = {c: np.flatnonzero(tried[c * 40 - 40:c * 40] >= tau) for c in (1, 2)}
    stats = {}
    with caplog.at_level(logging.WARNING, logger="augment"):
        _, labels, seeds, scores = gen.generate(sampler, {"one": 20, "two": 20}, batch_size=8, progress=False,
                                                stats=stats, keep=gen.ScoreFilter(tau, 2.0, fill=False))
    want = {c: idx[:20] for c, idx in passing.items()}  # the first 40 tried: max_oversample 2 x 20
    assert [stats[n]["accepted"] for n in ("one", "two")] == [len(want[1]), len(want[2])]
    assert all(st["below_tau"] == 0 for st in stats.values())
    assert labels.tolist() == [1] * len(want[1]) + [2] * len(want[2])
    assert seeds.tolist() == [gen.sample_seed(0, c, int(i)) for c in (1, 2) for i in want[c]]
    assert (scores >= tau).all()
    short = [n for n in ("one", "two") if stats[n]["accepted"] < 20]
    assert short and all(f"class {n!r}: only" in caplog.text for n in short)
    assert "kept those alone (generate.filter.fill: false)" in caplog.text


def test_scorer_without_tau_records_scores_and_keeps_all():
    sampler = gen.Sampler(TinyG(), tiny_meta(), seed=0, scorer=mean_scorer)
    _, _, _, scores = gen.generate(sampler, {"one": 6}, batch_size=4, progress=False)
    assert scores.dtype == np.float32 and ((scores > 0) & (scores < 1)).all()


# ---- failure modes -------------------------------------------------------------------------------------

def test_bad_plans_and_broken_generators_are_clear_errors():
    G, meta = TinyG(), tiny_meta()
    with pytest.raises(DataError, match=r"plan class\(es\) \['seven'\] are not among the generator's classes"):
        gen.generate(gen.Sampler(G, meta, seed=0), {"seven": 3}, batch_size=4, progress=False)
    with pytest.raises(DataError, match=r"plan\['one'\] = -1: quotas must be integers >= 0"):
        gen.generate(gen.Sampler(G, meta, seed=0), {"one": -1}, batch_size=4, progress=False)
    with pytest.raises(TrainingError, match=r"generator output \[1, 6, 6\] differs from its metadata's image_shape \[3, 6, 6\]"):
        gen.generate(gen.Sampler(G, tiny_meta(shape=(3, 6, 6)), seed=0), {"one": 1}, batch_size=4,
                     progress=False)
    with torch.no_grad():
        G.fc.bias[0] = float("nan")
    with pytest.raises(TrainingError, match="non-finite pixels for class 1"):
        gen.generate(gen.Sampler(G, meta, seed=0), {"one": 1}, batch_size=4, progress=False)


def test_empty_plan_gives_empty_arrays():
    images, labels, seeds, scores = gen.generate(gen.Sampler(TinyG(), tiny_meta(), seed=0), {"one": 0}, batch_size=4,
                                                 progress=False)
    assert images.shape == (0, 6, 6, 1) and len(labels) == len(seeds) == len(scores) == 0


# ---- generate -> shards ----------------------------------------------------------------------------------

def make_shards(folder, G, meta, plan, batch_size, seed=0, shard_size=50):
    images, labels, seeds, scores = gen.generate(gen.Sampler(G, meta, seed=seed), plan, batch_size=batch_size,
                                                 progress=False)
    columns = release.synthetic_columns(meta["sha256"], seeds, scores)
    return release.write_shards(folder, ImageTable(images, labels, meta["class_names"]), columns, shard_size,
                                {"plan": plan, "params": {"seed": seed, "batch_size": batch_size}})


def test_same_seed_gives_byte_identical_shards_for_batch_sizes_1_7_256(tmp_path):
    G, meta = TinyG(shape=(3, 5, 5)), tiny_meta(shape=(3, 5, 5))
    plan = {"zero": 3, "two": 120, "three": 17}
    manifests = [make_shards(tmp_path / f"b{b}", G, meta, plan, b) for b in (1, 7, 256)]
    files = [[(f["path"], f["sha256"], f["rows"]) for f in m["files"]] for m in manifests]
    assert files[0] == files[1] == files[2]
    for b in (7, 256):
        for f in manifests[0]["files"]:
            assert (tmp_path / f"b{b}" / f["path"]).read_bytes() == (tmp_path / "b1" / f["path"]).read_bytes()
    m = manifests[0]
    assert m["counts"] == {"zero": 3, "one": 0, "two": 120, "three": 17}
    labels = np.concatenate([pq.read_table(tmp_path / "b1" / f["path"], columns=["label"])["label"].to_numpy()
                             for f in m["files"]])
    assert np.bincount(labels, minlength=4).tolist() == [3, 0, 120, 17]
    first = pq.read_table(tmp_path / "b1" / m["files"][0]["path"]).to_pylist()[0]
    with Image.open(pyio.BytesIO(first["image"]["bytes"])) as im:
        assert im.mode == "RGB" and im.size == (5, 5)
    assert first["generator"] == "cd" * 32 and first["seed"] == gen.sample_seed(0, 0, 0)


# ---- the project's GAN ---------------------------------------------------------------------------------

@pytest.mark.slow
def test_sngan_generator_is_batch_size_independent_at_28x28():
    from pipeline.models import GAN_ARCHS

    with torch.random.fork_rng():
        torch.manual_seed(0)
        G, _ = GAN_ARCHS["sngan"].build((1, 28, 28), 10, 64, "light")
    meta = tiny_meta(z_dim=64, shape=(1, 28, 28), names=[str(i) for i in range(10)])
    plan = {"3": 40, "9": 3}
    runs = [gen.generate(gen.Sampler(G, meta, seed=2), plan, batch_size=b, progress=False) for b in (1, 7, 256)]
    for other in runs[1:]:
        for a, b in zip(runs[0], other):
            np.testing.assert_array_equal(a, b)
    assert runs[0][0].shape == (43, 28, 28, 1)


def test_sngan_generates_with_its_fused_class_forward_the_pixels_of_its_plain_forward():
    """generate runs sngan through `for_class` (BatchNorms folded, ops fused); in fp32 its pixels
    are those of G(z, y) on the same noise, bar a rare one-level flip where folding rounds the other way."""
    from pipeline.models import GAN_ARCHS

    with torch.random.fork_rng():
        torch.manual_seed(0)
        G, _ = GAN_ARCHS["sngan"].build((1, 16, 16), 3, 16, "light")
    with torch.no_grad():  # classes and statistics that differ, as a trained generator's do
        for m in G.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.5, 2)
            elif isinstance(m, nn.Embedding):
                m.weight.uniform_(-1.5, 1.5)
    meta = tiny_meta(z_dim=16, shape=(1, 16, 16), names=["a", "b", "c"])
    built = []
    for_class = G.for_class
    G.for_class = lambda c, dtype: built.append(c) or for_class(c, dtype)
    images, labels, seeds, _ = gen.generate(gen.Sampler(G, meta, seed=4), {"b": 30, "c": 5}, batch_size=8,
                                            progress=False)
    assert sorted(set(built)) == [1, 2]  # the fused forward ran, per class
    with torch.no_grad():
        plain = to_uint8(G.eval()(gen.sample_noise(seeds, 16), torch.as_tensor(labels))).numpy()
    diff = np.abs(images.astype(int) - plain.astype(int))
    assert diff.max() <= 1 and (diff > 0).mean() < 1e-3


@pytest.mark.slow
def test_trained_checkpoint_through_load_generator(tmp_path):
    gan = pytest.importorskip("pipeline.gan")
    from pipeline.config import TrainGanConfig
    from pipeline.gan_checkpoints import load_generator
    from pipeline.data import ImageTable

    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), 8)
    images = np.clip(labels[:, None, None, None] * 80 + rng.integers(0, 40, (24, 8, 8, 1)), 0, 255).astype(np.uint8)
    train = ImageTable(images, labels, ("a", "b", "c"))
    cfg = TrainGanConfig(steps=2, batch_size=8, checkpoint_every=2, sample_every=2, ema_warmup=0, device="cpu",
                         precision="fp32", z_dim=16)
    final = gan.train_gan(cfg, train, tmp_path / "gan", progress=False)
    G, meta = load_generator(final)
    assert meta["class_names"] == ["a", "b", "c"]
    m = make_shards(tmp_path / "syn", G, meta, {"b": 5, "c": 9}, batch_size=3)
    table = loaders.load_table(tmp_path / "syn", verify=True)
    assert table.images.shape == (14, 8, 8, 1) and table.counts().tolist() == [0, 5, 9]
    assert m["files"] and pq.read_table(tmp_path / "syn" / m["files"][0]["path"])["generator"][0].as_py() == meta["sha256"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_gives_the_cpu_images_up_to_rounding():
    G, meta = TinyG(), tiny_meta()
    cpu = gen.generate(gen.Sampler(G, meta, seed=0), {"one": 100}, batch_size=32, progress=False)
    cuda = gen.generate(gen.Sampler(G.cuda(), meta, seed=0, device="cuda"), {"one": 100}, batch_size=32,
                        progress=False)
    np.testing.assert_array_equal(cpu[2], cuda[2])  # same seeds, same noise (drawn on the CPU)
    assert np.abs(cpu[0].astype(int) - cuda[0].astype(int)).max() <= 1
    again = gen.generate(gen.Sampler(G, meta, seed=0, device="cuda"), {"one": 100}, batch_size=7, progress=False)
    np.testing.assert_array_equal(cuda[0], again[0])


@pytest.mark.slow
def test_bf16_generation_is_batch_size_independent_and_close_to_fp32():
    """generate.precision bf16: the same bytes whatever batch_size, the noise and seeds untouched,
    and for this small random generator each pixel at most one level (of 255) from the fp32 output
    (trained generators move more: up to 22 levels on the MNIST-LT GAN, see `Sampler.dtype`)."""
    from pipeline.models import GAN_ARCHS

    with torch.random.fork_rng():
        torch.manual_seed(0)
        G, _ = GAN_ARCHS["sngan"].build((1, 28, 28), 10, 64, "light", 16)
    with torch.no_grad():  # a generator whose classes and statistics differ, as a trained one's do
        for name, p in G.named_parameters():
            if "gain" in name or "bias.weight" in name:
                p.add_(torch.randn_like(p) * 0.3)
    meta = tiny_meta(z_dim=64, shape=(1, 28, 28), names=[str(i) for i in range(10)])
    plan = {"3": 40, "9": 3}
    runs = [gen.generate(gen.Sampler(G, meta, seed=2, dtype=torch.bfloat16), plan, batch_size=b, progress=False)
            for b in (1, 7, 256)]
    for other in runs[1:]:
        for a, b in zip(runs[0], other):
            np.testing.assert_array_equal(a, b)
    fp32 = gen.generate(gen.Sampler(G, meta, seed=2), plan, batch_size=256, progress=False)
    np.testing.assert_array_equal(fp32[2], runs[0][2])
    diff = np.abs(fp32[0].astype(int) - runs[0][0].astype(int))
    assert diff.max() <= 1 and diff.mean() < 0.2


@pytest.mark.parametrize("arch", ["sngan", "dcgan", "concat"])
@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32)])
def test_every_arch_generates_in_bf16_close_to_fp32_and_leaves_its_generator_fp32(arch, shape):
    """bf16 runs a bf16 copy of G (`in_precision`): every op of every arch has a bf16 kernel, the
    caller's G keeps its fp32 weights and its train mode, and the images stay near the fp32 ones."""
    from pipeline.models import GAN_ARCHS

    with torch.random.fork_rng():
        torch.manual_seed(0)
        G, _ = GAN_ARCHS[arch].build(shape, 3, 16, "light", 8)
    meta = tiny_meta(z_dim=16, shape=shape, names=["a", "b", "c"])
    plan = {"a": 5, "c": 20}
    bf16 = gen.generate(gen.Sampler(G, meta, seed=0, dtype=torch.bfloat16), plan, batch_size=8, progress=False)
    assert G.training and all(p.dtype == torch.float32 for p in G.parameters())
    fp32 = gen.generate(gen.Sampler(G, meta, seed=0), plan, batch_size=8, progress=False)
    assert bf16[0].shape == fp32[0].shape == (25, shape[1], shape[2], shape[0])
    np.testing.assert_array_equal(bf16[2], fp32[2])
    assert np.abs(bf16[0].astype(int) - fp32[0].astype(int)).mean() < 1.0
    assert gen.in_precision(G, None) is G  # fp32 asked, fp32 held: no copy
