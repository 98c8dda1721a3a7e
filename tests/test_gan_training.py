"""train_gan: EMA arithmetic, balanced sampling, fingerprints, and whole runs on sklearn's 8x8 digits.

Integration runs are tiny (light size, batch 16, a few steps): they check files, determinism,
resume after `kill -9`, the non-finite-loss stop and the refusal of foreign checkpoints.
"""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from torch import nn

from pipeline import device as devices
from pipeline import gan, gan_checkpoints, gan_fingerprint, gan_objectives, gan_run, gan_visuals
from pipeline.config import TrainGanConfig
from pipeline.data import ImageTable, data_fingerprint
from pipeline.gan_fingerprint import config_fingerprint
from pipeline.errors import ConfigError, DataError, TrainingError
from pipeline.atomic import sha256_file
from pipeline.losses import LOSSES, GanLoss
from pipeline.models.gans import GAN_ARCHS

REPO = Path(__file__).resolve().parents[1]
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def digits_table(classes=(0, 1, 2)) -> ImageTable:
    """sklearn's bundled 8x8 digits (no download) for `classes`, as uint8 (N, 8, 8, 1)."""
    d = load_digits()
    keep = np.isin(d.target, classes)
    images = np.round(d.images[keep] * 255 / 16).astype(np.uint8)[..., None]
    remap = {c: i for i, c in enumerate(classes)}
    labels = np.array([remap[t] for t in d.target[keep]])
    return ImageTable(images, labels, tuple(f"digit{c}" for c in classes))


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models run fastest on one thread (and two threads crawl on a busy 2-core machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny_cfg(**kw) -> TrainGanConfig:
    base = dict(steps=6, batch_size=16, z_dim=16, checkpoint_every=3, sample_every=3, ema_warmup=2,
                device="cpu", precision="fp32", seed=0)
    return TrainGanConfig(**(base | kw))


def state(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def assert_same_weights(a: dict, b: dict) -> None:
    for key in ("g", "g_ema", "d"):
        assert a[key].keys() == b[key].keys()
        for name in a[key]:
            assert torch.equal(a[key][name], b[key][name]), f"{key}.{name} differs"


# ----------------------------------------------------------------------------- pure helpers


def test_ema_decay_warm_up_then_capped_ramp():
    assert gan.ema_decay_at(1, 0.999, warmup=10) == 0.0
    assert gan.ema_decay_at(10, 0.999, warmup=10) == 0.0  # still a plain copy
    assert gan.ema_decay_at(20, 0.999, warmup=10) == pytest.approx(21 / 30)
    assert gan.ema_decay_at(10_000, 0.999, warmup=10) == 0.999
    assert gan.ema_decay_at(5, 0.9, warmup=0) == pytest.approx(6 / 15)


def test_ema_update_arithmetic_covers_batchnorm_buffers():
    model = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    ema = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(1.0)
        for p in ema.parameters():
            p.fill_(5.0)
        model[1].running_mean.fill_(2.0)
        ema[1].running_mean.fill_(6.0)
        model[1].num_batches_tracked.fill_(7)
    gan.ema_update(ema, model, decay=0.75)
    for p in ema.parameters():
        torch.testing.assert_close(p, torch.full_like(p, 0.75 * 5 + 0.25 * 1))
    torch.testing.assert_close(ema[1].running_mean, torch.full((2,), 0.75 * 6 + 0.25 * 2))
    assert ema[1].num_batches_tracked.item() == 7
    gan.ema_update(ema, model, decay=0.0)  # warm-up: an exact copy
    for e, p in zip(ema.state_dict().values(), model.state_dict().values()):
        assert torch.equal(e, p)


def test_balanced_sampler_draws_rare_classes_as_often():
    labels = np.array([0] * 100 + [1] * 10 + [2] * 1)
    for balanced, expected in [(True, [1 / 3] * 3), (False, [100 / 111, 10 / 111, 1 / 111])]:
        s = gan_run.ClassSampler(labels, [0, 1, 2], balanced, torch.Generator().manual_seed(0))
        rows, y = s.batch(6000)
        assert torch.equal(torch.from_numpy(labels)[rows], y)  # each row is of its drawn class
        np.testing.assert_allclose(np.bincount(y.numpy(), minlength=3) / 6000, expected, atol=0.02)
        fake = s.labels(6000, torch.Generator().manual_seed(1))
        np.testing.assert_allclose(np.bincount(fake.numpy(), minlength=3) / 6000, expected, atol=0.02)
    # a chosen subset: other classes never drawn
    s = gan_run.ClassSampler(labels, [1, 2], True, torch.Generator().manual_seed(0))
    assert set(s.batch(500)[1].tolist()) == {1, 2}


def test_sampler_is_reproducible_from_its_generator():
    labels = np.repeat(np.arange(4), 5)
    a = gan_run.ClassSampler(labels, [0, 1, 2, 3], True, torch.Generator().manual_seed(3)).batch(32)
    b = gan_run.ClassSampler(labels, [0, 1, 2, 3], True, torch.Generator().manual_seed(3)).batch(32)
    assert all(torch.equal(u, v) for u, v in zip(a, b))


def test_fingerprints():
    table = digits_table()
    fp = data_fingerprint(table)
    images = table.images.copy()
    images[0, 0, 0, 0] ^= 1
    assert data_fingerprint(ImageTable(images, table.labels, table.class_names)) != fp
    assert data_fingerprint(ImageTable(table.images, table.labels, ("a", "b", "c"))) != fp
    cfg = tiny_cfg()
    assert gan_fingerprint.config_fingerprint(cfg, fp) == gan_fingerprint.config_fingerprint(tiny_cfg(steps=99, checkpoint_every=7), fp)
    assert gan_fingerprint.config_fingerprint(cfg, fp) != gan_fingerprint.config_fingerprint(tiny_cfg(lr_d=1e-3), fp)
    assert gan_fingerprint.config_fingerprint(cfg, fp) == gan_fingerprint.config_fingerprint(tiny_cfg(cpu_threads=3), fp)


@pytest.mark.parametrize("threads", [None, 2])
def test_stage_trains_with_train_gan_cpu_threads_then_restores(tmp_path, monkeypatch, threads):
    from pipeline import params_file
    from pipeline.stages import stage

    seen = []
    import pipeline.stages.train_gan as train_stage

    monkeypatch.setattr(train_stage, "fit", lambda *a, **k: seen.append(torch.get_num_threads()) or tmp_path / "final.pt")
    paths = {"prepared": str(tmp_path / "prepared"), "gan": str(tmp_path / "gan")}
    cfg = params_file.build({"paths": paths}, {"train_gan.cpu_threads": threads})
    stage("prepare")(cfg)  # the real stage on the bundled digits: what train_gan reads
    assert torch.get_num_threads() == 1  # the autouse fixture's count
    stage("train_gan")(cfg)
    assert seen == [threads or 1] and torch.get_num_threads() == 1


def test_resolve_classes():
    table = digits_table()
    assert gan.resolve_classes(tiny_cfg(), table) == [0, 1, 2]
    assert gan.resolve_classes(tiny_cfg(classes=["digit2", "digit0"]), table) == [0, 2]
    with pytest.raises(ConfigError, match="train_gan.classes: 'digit7' is not a class.*valid: digit0"):
        gan.resolve_classes(tiny_cfg(classes=["digit7"]), table)
    empty = ImageTable(table.images, np.minimum(table.labels, 1), table.class_names)
    with pytest.raises(DataError, match="no image of class\\(es\\) 'digit2'"):
        gan.resolve_classes(tiny_cfg(), empty)


# ----------------------------------------------------------------------------- whole runs


def test_diversity_at_end_reads_the_last_step_by_hand(tmp_path):
    assert gan_visuals.diversity_at_end(tmp_path, ("a", "b")) is None  # no signal written
    (tmp_path / "diversity.csv").write_text(
        "step,class,fake,real,ratio\n100,0,1.0,4.0,0.25\n100,1,2.0,2.0,1.0\n200,0,3.0,4.0,0.75\n200,1,0.8,2.0,0.4\n")
    assert gan_visuals.diversity_at_end(tmp_path, ("a", "b")) == {
        "step": 200, "ratio": {"a": 0.75, "b": 0.4}, "collapse_ratio": 0.5, "collapsed": ["b"]}


def test_short_run_writes_everything_and_loads(tmp_path, caplog):
    table = digits_table()
    with caplog.at_level(logging.INFO, logger="augment"):
        final = gan.train_gan(tiny_cfg(steps=7), table, tmp_path, progress=False)
    assert final == tmp_path / "final.pt"
    assert [s for s, _ in gan_checkpoints.list_checkpoints(tmp_path)] == [3, 6]  # every 3 steps, last two kept
    for name in ("losses.csv", "losses.png", "diversity.csv", "interpolation.png", "samples.gif"):
        assert (tmp_path / name).stat().st_size > 0, name
    assert sorted(p.name for p in (tmp_path / "samples").iterdir()) == [
        "step-0000003.png", "step-0000006.png", "step-0000007.png"]
    assert not list(tmp_path.glob(".tmp-*"))
    lines = (tmp_path / "losses.csv").read_text().splitlines()
    assert lines[0] == "step,d_loss,g_loss,gp,d_real,d_fake" and len(lines) == 8
    div = (tmp_path / "diversity.csv").read_text().splitlines()
    assert div[0] == "step,class,fake,real,ratio" and len(div) == 1 + 3 * 3
    end = gan_visuals.diversity_at_end(tmp_path, table.class_names)  # the signal of the last step, by class name
    last = {int(float(r.split(",")[1])): float(r.split(",")[4]) for r in div[-3:]}
    assert end["step"] == 7 and end["ratio"] == {n: round(last[i], 4) for i, n in enumerate(table.class_names)}
    assert end["collapsed"] == [n for n in table.class_names if end["ratio"][n] < gan_visuals.COLLAPSE_RATIO]

    meta = state(final)
    assert meta["format"] == "augment-gan/1" and meta["step"] == 7
    assert meta["image_shape"] == [1, 8, 8] and meta["class_names"] == ["digit0", "digit1", "digit2"]
    assert meta["train_classes"] == meta["class_names"] and meta["config"]["steps"] == 7
    ckpt = state(tmp_path / "checkpoint-6.pt")
    assert {"torch", "numpy", "python", "per_rank"} <= set(ckpt["rng"])
    assert set(ckpt["rng"]["per_rank"][0]) == {"sampler", "noise", "diffaug", "gp"}
    assert {"g", "d", "g_ema", "opt_g", "opt_d", "step", "fingerprint"} <= set(ckpt)

    G, info = gan_checkpoints.load_generator(final)
    assert not G.training and info["sha256"] == sha256_file(final)
    assert info["z_dim"] == 16 and "g_ema" not in info
    x = G(torch.randn(4, 16), torch.tensor([0, 1, 2, 0]))
    assert x.shape == (4, 1, 8, 8)

    # a rerun with the same params and data is a no-op
    mtime = final.stat().st_mtime_ns
    with caplog.at_level(logging.INFO, logger="augment"):
        gan.train_gan(tiny_cfg(steps=7), table, tmp_path, progress=False)
    assert final.stat().st_mtime_ns == mtime and "already trained" in caplog.text


def test_same_seed_same_weights_other_seed_differs(tmp_path):
    table = digits_table()
    a = state(gan.train_gan(tiny_cfg(steps=4), table, tmp_path / "a", progress=False))
    b = state(gan.train_gan(tiny_cfg(steps=4), table, tmp_path / "b", progress=False))
    assert_same_weights(a, b)
    c = state(gan.train_gan(tiny_cfg(steps=4, seed=1), table, tmp_path / "c", progress=False))
    assert not torch.equal(a["g_ema"]["fc.weight"], c["g_ema"]["fc.weight"])


def test_resume_in_process_matches_uninterrupted(tmp_path, caplog):
    table = digits_table()
    full = state(gan.train_gan(tiny_cfg(steps=8, checkpoint_every=4), table, tmp_path / "full", progress=False))
    gan.train_gan(tiny_cfg(steps=4, checkpoint_every=4), table, tmp_path / "parts", progress=False)
    with caplog.at_level(logging.INFO, logger="augment"):
        parts = state(gan.train_gan(tiny_cfg(steps=8, checkpoint_every=4), table, tmp_path / "parts", progress=False))
    assert "resuming from checkpoint-4.pt" in caplog.text
    assert_same_weights(full, parts)
    assert (tmp_path / "full" / "losses.csv").read_text() == (tmp_path / "parts" / "losses.csv").read_text()


def test_lecam_trains_differently_and_resumes_bit_identical(tmp_path, caplog):
    """LeCam's moving averages are part of the checkpoint: a resumed run ends with the weights of
    an uninterrupted one; with weight 0 the run is the plain one, fingerprint included."""
    table = digits_table()
    plain = state(gan.train_gan(tiny_cfg(steps=8, checkpoint_every=4), table, tmp_path / "plain", progress=False))
    cfg = dict(steps=8, checkpoint_every=4, lecam_weight=0.5, lecam_decay=0.9)
    full = state(gan.train_gan(tiny_cfg(**cfg), table, tmp_path / "full", progress=False))
    assert not torch.equal(plain["d"]["fc.parametrizations.weight.original"], full["d"]["fc.parametrizations.weight.original"])
    gan.train_gan(tiny_cfg(**{**cfg, "steps": 4}), table, tmp_path / "parts", progress=False)
    ckpt = state(tmp_path / "parts" / "checkpoint-4.pt")
    assert len(ckpt["lecam"]) == 2 and all(math.isfinite(v) for v in ckpt["lecam"])
    with caplog.at_level(logging.INFO, logger="augment"):
        parts = state(gan.train_gan(tiny_cfg(**cfg), table, tmp_path / "parts", progress=False))
    assert "resuming from checkpoint-4.pt" in caplog.text
    assert_same_weights(full, parts)
    fp = data_fingerprint(table)
    assert config_fingerprint(tiny_cfg(lecam_weight=0.0, lecam_decay=0.99), fp) == config_fingerprint(tiny_cfg(), fp)
    assert config_fingerprint(tiny_cfg(lecam_weight=0.5), fp) != config_fingerprint(tiny_cfg(), fp)


def test_ada_raises_its_probability_and_resumes_bit_identical(tmp_path):
    table = digits_table()
    cfg = dict(steps=8, checkpoint_every=4, diffaug="translation,cutout", ada_target=0.01, ada_images=64)
    full_dir, parts_dir = tmp_path / "full", tmp_path / "parts"
    full = state(gan.train_gan(tiny_cfg(**cfg), table, full_dir, progress=False))
    gan.train_gan(tiny_cfg(**{**cfg, "steps": 4}), table, parts_dir, progress=False)
    p, _, count = state(parts_dir / "checkpoint-4.pt")["ada"]
    assert count == 0 and p in (0.0, 1.0)  # one interval of 4 steps of 16 images: p moved by 64 / 64
    parts = state(gan.train_gan(tiny_cfg(**cfg), table, parts_dir, progress=False))
    assert_same_weights(full, parts)
    with pytest.raises(ConfigError, match="ada_target"):
        gan.train_gan(tiny_cfg(diffaug="", ada_target=0.6), table, tmp_path / "empty", progress=False)


def test_gsr_shrinks_the_class_conditional_norms_and_keeps_the_plain_fingerprint(tmp_path):
    """gSR lowers the spectral norms of G's class gains and biases against the plain run; at 0 it
    is the plain run (fingerprint unchanged); an arch without conditional BatchNorm refuses it."""
    from pipeline.losses import group_spectral_penalty

    table = digits_table()
    cfg = dict(steps=8, lr_g=5e-3, ema_warmup=100)  # final.pt's EMA generator is a copy of G

    def norms(path):
        G, _ = gan_checkpoints.load_generator(path)
        return sum(group_spectral_penalty(p).item() for p in GAN_ARCHS["sngan"].class_parameters(G))

    plain = gan.train_gan(tiny_cfg(**cfg), table, tmp_path / "plain", progress=False)
    gsr = gan.train_gan(tiny_cfg(**cfg, gsr_weight=5.0), table, tmp_path / "gsr", progress=False)
    assert 0 < norms(gsr) < norms(plain)
    fp = data_fingerprint(table)
    assert config_fingerprint(tiny_cfg(gsr_weight=0.0), fp) == config_fingerprint(tiny_cfg(), fp)
    assert config_fingerprint(tiny_cfg(gsr_weight=0.5), fp) != config_fingerprint(tiny_cfg(), fp)
    with pytest.raises(ValueError, match="gsr_weight > 0 regularises class-conditional BatchNorm"):
        tiny_cfg(arch="concat", gsr_weight=0.5)


def test_embed_noise_perturbs_class_embeddings_only_while_training():
    """Each training forward draws fresh noise from the given generator (reproducible from its
    seed); eval mode, and std 0, leave the class's own gain and bias."""
    from pipeline.models.sngan import ConditionalBatchNorm2d

    G, _ = GAN_ARCHS["sngan"].build((1, 8, 8), 3, 8, "light", 4)
    cbn = next(m for m in G.modules() if isinstance(m, ConditionalBatchNorm2d))
    y = torch.tensor([0, 0, 2])
    clean = [t.detach().clone() for t in cbn.affine(y)]
    GAN_ARCHS["sngan"].set_embed_noise(G, 0.5, torch.Generator().manual_seed(7))
    G.train()
    first = cbn.affine(y)
    second = cbn.affine(y)
    assert not torch.equal(first[0], second[0])  # fresh noise per forward
    assert not torch.equal(first[0][0], first[0][1])  # and per sample, same class
    expected = torch.randn((2, *clean[0].shape), generator=torch.Generator().manual_seed(7))
    assert torch.allclose(first[0], clean[0] + 0.5 * expected[0]) and torch.allclose(first[1], clean[1] + 0.5 * expected[1])
    G.eval()
    assert all(torch.equal(a, b) for a, b in zip(cbn.affine(y), clean))


def resumes_bit_identical(table, tmp_path, **cfg) -> tuple[dict, dict]:
    """Train tiny_cfg(steps=8, checkpoint_every=4, **cfg) whole, and again resumed from step 4:
    assert the same weights; return (its final state, the state of the run without cfg's options)."""
    base = dict(steps=8, checkpoint_every=4)
    full = gan.train_gan(tiny_cfg(**base, **cfg), table, tmp_path / "full", progress=False)
    parts_dir = tmp_path / "parts"
    gan.train_gan(tiny_cfg(**base, **cfg), table, parts_dir, progress=False)
    (parts_dir / "final.pt").unlink()
    (parts_dir / "checkpoint-8.pt").unlink()
    assert_same_weights(state(full), state(gan.train_gan(tiny_cfg(**base, **cfg), table, parts_dir, progress=False)))
    return state(full), state(gan.train_gan(tiny_cfg(**base), table, tmp_path / "plain", progress=False))


def test_embed_noise_run_resumes_bit_identical_and_keeps_the_plain_fingerprint(tmp_path):
    table = digits_table()
    full, plain = resumes_bit_identical(table, tmp_path, embed_noise=0.3)
    assert not torch.equal(plain["g"]["fc.weight"], full["g"]["fc.weight"])
    fp = data_fingerprint(table)
    assert config_fingerprint(tiny_cfg(embed_noise=0.0), fp) == config_fingerprint(tiny_cfg(), fp)
    assert config_fingerprint(tiny_cfg(embed_noise=0.3), fp) != config_fingerprint(tiny_cfg(), fp)
    with pytest.raises(ValueError, match="embed_noise > 0 perturbs per-class BatchNorm embeddings"):
        tiny_cfg(arch="concat", embed_noise=0.3)


def test_mode_seeking_pairs_the_fakes_and_resumes_bit_identical(tmp_path):
    """With ms_weight the fake labels come in same-class pairs (odd batches too), the run trains
    differently from the plain one and resumes bit-identical; at 0 the fingerprint is the plain
    one; a batch of one image has no pair and is refused."""
    table = digits_table()
    with devices.distributed(torch.device("cpu")) as dist:
        for b in (5, 16):
            run = gan._build_run(tiny_cfg(batch_size=b, ms_weight=1.0), table, [0, 1, 2], dist)
            _, y = gan._noise(run)
            first, second = gan_objectives.pairs(y)
            assert len(y) == b and len(first) == b // 2 and torch.equal(first, second)
        run = gan._build_run(tiny_cfg(), table, [0, 1, 2], dist)
        assert len(set(gan._noise(run)[1][:8].tolist())) > 1  # off: labels drawn independently
        with pytest.raises(ConfigError, match="ms_weight 1.0 compares pairs"):
            gan._build_run(tiny_cfg(batch_size=1, ms_weight=1.0), table, [0, 1, 2], dist)
    full, plain = resumes_bit_identical(table, tmp_path, ms_weight=1.0)
    assert not torch.equal(plain["g"]["fc.weight"], full["g"]["fc.weight"])
    fp = data_fingerprint(table)
    assert config_fingerprint(tiny_cfg(ms_weight=0.0), fp) == config_fingerprint(tiny_cfg(), fp)
    assert config_fingerprint(tiny_cfg(ms_weight=1.0), fp) != config_fingerprint(tiny_cfg(), fp)


def test_twin_class_head_objectives_by_hand():
    """TAC-GAN: D's twin head (logits K..2K) learns the fakes' labels, G's loss subtracts its CE;
    the class head (0..K) learns the real labels only."""
    from types import SimpleNamespace

    from pipeline.gan_objectives import d_objective, g_objective

    run = SimpleNamespace(cfg=tiny_cfg(batch_size=1, aux_weight=0.5, aux_twin=True), loss=LOSSES["hinge"], lecam=None)
    ln3 = math.log(3.0)
    # hinge D at real 1, fake -1 is 0; real row: head [ln3, 0] for class 0, CE -log(3/4); fake row: twin [0, 0], CE log 2
    class_logits = torch.tensor([[ln3, 0.0, 9.0, 9.0], [9.0, 9.0, 0.0, 0.0]])
    d = d_objective(run, (torch.tensor([1.0]), torch.tensor([-1.0])), class_logits, (torch.tensor([0]), torch.tensor([1])))
    assert d.item() == pytest.approx(0.5 * -math.log(0.75) + 0.5 * math.log(2.0))
    # hinge G at fake -1 is 1; head [0, 0]: + 0.5 log 2; twin [ln3, 0] for class 0: - 0.5 * -log(3/4)
    fakes = (torch.zeros(1, 1, 2, 2), torch.zeros(1, 3), torch.tensor([0]))
    g = g_objective(run, torch.tensor([-1.0]), torch.tensor([[0.0, 0.0, ln3, 0.0]]), fakes, 1.0)
    assert g.item() == pytest.approx(1.0 + 0.5 * math.log(2.0) - 0.5 * -math.log(0.75))


def test_twin_class_head_trains_resumes_and_keeps_the_plain_fingerprint(tmp_path):
    table = digits_table()
    cfg = dict(steps=8, checkpoint_every=4, aux_weight=1.0)
    full = gan.train_gan(tiny_cfg(**cfg, aux_twin=True), table, tmp_path / "full", progress=False)
    assert state(full)["d"]["classifier.weight"].shape[0] == 2 * 3  # the head and its twin, 3 classes each
    parts_dir = tmp_path / "parts"
    gan.train_gan(tiny_cfg(**cfg, aux_twin=True), table, parts_dir, progress=False)
    (parts_dir / "final.pt").unlink()
    (parts_dir / "checkpoint-8.pt").unlink()
    assert_same_weights(state(full), state(gan.train_gan(tiny_cfg(**cfg, aux_twin=True), table, parts_dir, progress=False)))
    plain = state(gan.train_gan(tiny_cfg(**cfg), table, tmp_path / "plain", progress=False))
    assert not torch.equal(plain["g"]["fc.weight"], state(full)["g"]["fc.weight"])
    fp = data_fingerprint(table)
    assert config_fingerprint(tiny_cfg(aux_twin=False), fp) == config_fingerprint(tiny_cfg(), fp)
    assert config_fingerprint(tiny_cfg(aux_weight=1.0, aux_twin=True), fp) != config_fingerprint(tiny_cfg(aux_weight=1.0), fp)
    with pytest.raises(ConfigError, match="aux_twin twins the AC-GAN class head, and aux_weight is 0"):
        gan.train_gan(tiny_cfg(aux_twin=True), table, tmp_path / "refused", progress=False)
    assert not (tmp_path / "refused" / "final.pt").exists()


def test_conditioning_schedule_by_hand():
    cfg = tiny_cfg(steps=20, transition_start=4, transition_steps=8)
    assert [gan_run.conditioning_at(s, cfg) for s in (1, 4, 6, 12, 20)] == [0.0, 0.0, 0.25, 1.0, 1.0]
    assert gan_run.conditioning_at(1, tiny_cfg()) == 1.0


def test_transitional_run_resumes_bit_identical_and_ends_fully_conditional(tmp_path):
    table = digits_table()
    cfg = dict(steps=8, checkpoint_every=4, transition_start=2, transition_steps=4, track_quality=True,
               judge_epochs=1, sample_every=2, early_stop_patience=0)
    full = gan.train_gan(tiny_cfg(**cfg), table, tmp_path / "full", progress=False)
    parts_dir = tmp_path / "parts"  # a run stopped after its step-4 checkpoint (mid-transition)
    gan.train_gan(tiny_cfg(**cfg), table, parts_dir, progress=False)
    (parts_dir / "final.pt").unlink()
    (parts_dir / "checkpoint-8.pt").unlink()
    parts = gan.train_gan(tiny_cfg(**cfg), table, parts_dir, progress=False)
    assert_same_weights(state(full), state(parts))
    assert state(full)["best_step"] >= 6  # evaluations before the transition ended never count as the best
    plain = state(gan.train_gan(tiny_cfg(**{**cfg, "transition_steps": 0}), table, tmp_path / "plain", progress=False))
    assert not torch.equal(plain["g"]["fc.weight"], state(full)["g"]["fc.weight"])
    with pytest.raises(ConfigError, match="ends after steps 8"):
        gan.train_gan(tiny_cfg(**{**cfg, "transition_steps": 7}), table, tmp_path / "late", progress=False)
    with pytest.raises(ValueError, match="transition_steps > 0 needs an arch"):
        tiny_cfg(arch="concat", transition_steps=4)


def test_non_finite_loss_stops_naming_the_step_and_keeps_the_checkpoint(tmp_path, monkeypatch):
    calls = {"n": 0}
    hinge = LOSSES["hinge"]

    def g_loss(fake):  # finite for 7 steps, then NaN
        calls["n"] += 1
        return hinge.g_loss(fake) * (float("nan") if calls["n"] == 8 else 1.0)

    monkeypatch.setitem(LOSSES, "hinge", GanLoss("hinge", hinge.d_loss, g_loss))
    with pytest.raises(TrainingError, match="non-finite loss at step 8 .*last good checkpoint checkpoint-6.pt"):
        gan.train_gan(tiny_cfg(steps=12), digits_table(), tmp_path, progress=False)
    assert [s for s, _ in gan_checkpoints.list_checkpoints(tmp_path)] == [3, 6]
    assert state(tmp_path / "checkpoint-6.pt")["step"] == 6
    assert not (tmp_path / "final.pt").exists()


def test_huge_learning_rate_is_caught(tmp_path):
    with pytest.raises(TrainingError, match="non-finite .* at step \\d+"):
        gan.train_gan(tiny_cfg(steps=30, lr_g=1e30, lr_d=1e30, checkpoint_every=100, sample_every=100),
                      digits_table(), tmp_path, progress=False)
    assert not (tmp_path / "final.pt").exists()


def test_checkpoints_of_other_data_or_config_are_kept_aside_never_blocking(tmp_path):
    table = digits_table()
    gan.train_gan(tiny_cfg(steps=3), table, tmp_path, progress=False)
    first = state(tmp_path / "final.pt")["fingerprint"]
    (tmp_path / "final.pt").unlink()
    images = table.images.copy()
    images[5, 3, 3, 0] ^= 7
    other = ImageTable(images, table.labels, table.class_names)
    gan.train_gan(tiny_cfg(steps=6), other, tmp_path, progress=False)  # other data: a new run
    assert (tmp_path / "previous" / first[:12] / "checkpoint-3.pt").is_file()
    assert state(tmp_path / "final.pt")["step"] == 6
    gan.train_gan(tiny_cfg(steps=6, loss="lsgan"), table, tmp_path, progress=False)  # other params: too
    assert len(list((tmp_path / "previous").iterdir())) == 2
    # back to the first params with fewer steps: its checkpoint returns, is past 2, and stays for later
    gan.train_gan(tiny_cfg(steps=2), table, tmp_path, progress=False)
    assert state(tmp_path / "final.pt")["step"] == 2 and (tmp_path / "checkpoint-3.pt").is_file()
    assert not (tmp_path / "previous" / first[:12]).exists()


def test_subset_of_classes(tmp_path):
    final = gan.train_gan(tiny_cfg(steps=2, classes=["digit1"]), digits_table(), tmp_path, progress=False)
    meta = state(final)
    assert meta["train_classes"] == ["digit1"] and meta["num_classes"] == 3
    assert len((tmp_path / "diversity.csv").read_text().splitlines()) == 1 + 1


@pytest.mark.parametrize(
    "kw",
    [dict(arch="dcgan", loss="wgan-gp", n_dis=2), dict(arch="concat", loss="bce", label_smoothing=0.1, diffaug=""),
     dict(arch="sngan", loss="lsgan", balanced_sampling=False)],
    ids=["dcgan-wgan-gp", "concat-bce", "sngan-lsgan"],
)
def test_other_recipes_train(tmp_path, kw):
    final = gan.train_gan(tiny_cfg(steps=3, **kw), digits_table(), tmp_path, progress=False)
    rows = (tmp_path / "losses.csv").read_text().splitlines()[1:]
    assert len(rows) == 3 and all(np.isfinite([float(v) for v in r.split(",")]).all() for r in rows)
    if kw["loss"] == "wgan-gp":
        assert all(float(r.split(",")[3]) > 0 for r in rows)  # the penalty is computed and logged
    assert gan_checkpoints.load_generator(final)[1]["arch"] == kw["arch"]


def test_aux_weight_trains_a_class_head_on_real_images(tmp_path):
    """AC-GAN loss: D's class head learns the real labels, and the G loss includes the class term."""
    table = digits_table()
    cfg = tiny_cfg(steps=40, aux_weight=1.0, ema_warmup=0, lr_d=2e-3)
    final = gan.train_gan(cfg, table, tmp_path, progress=False)
    ckpt = gan_checkpoints.list_checkpoints(tmp_path)[-1][1]
    _, D = GAN_ARCHS["sngan"].build((1, 8, 8), 3, 16, "light", aux_classifier=True)
    D.load_state_dict(state(ckpt)["d"])
    x = torch.from_numpy(table.images).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    y = torch.from_numpy(table.labels)
    with torch.no_grad():
        _, class_logits = D(x, y, classes=True)
    assert (class_logits.argmax(1) == y).float().mean() > 0.6  # 3 digit classes: chance is 1/3 (seeded run: 0.69)
    assert gan_checkpoints.load_generator(final)[1]["arch"] == "sngan"
    with pytest.raises(Exception, match="class head"):
        tiny_cfg(arch="concat", aux_weight=1.0)


_SCRIPT = """
import json, logging, sys
from pathlib import Path
logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")
sys.path.insert(0, {tests!r})
from test_gan_training import digits_table, tiny_cfg
from pipeline.gan import train_gan
train_gan(tiny_cfg(**json.loads(sys.argv[2])), digits_table(), Path(sys.argv[1]), progress=False)
"""


def _train_cmd(out: Path, **kw) -> list[str]:
    script = _SCRIPT.format(tests=str(REPO / "tests"))
    return [sys.executable, "-c", script, str(out), json.dumps(kw)]


def _env() -> dict:
    # one thread in every run, so CPU kernels reduce in the same order in all three processes
    return dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")


@pytest.mark.slow
def test_kill_9_then_rerun_is_bit_identical(tmp_path):
    kw = dict(steps=60, checkpoint_every=5, sample_every=30)
    subprocess.run(_train_cmd(tmp_path / "ref", **kw), env=_env(), check=True, capture_output=True)

    out = tmp_path / "killed"
    proc = subprocess.Popen(_train_cmd(out, **kw), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not (out / "checkpoint-5.pt").exists():
        assert proc.poll() is None and time.monotonic() < deadline, "run ended before its first checkpoint"
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (out / "final.pt").exists(), "the run finished before it was killed; raise steps"

    rerun = subprocess.run(_train_cmd(out, **kw), env=_env(), capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
    assert "resuming from checkpoint-" in rerun.stderr
    assert_same_weights(state(tmp_path / "ref" / "final.pt"), state(out / "final.pt"))
    assert (tmp_path / "ref" / "losses.csv").read_text() == (out / "losses.csv").read_text()


_SYNC_SCRIPT = """
import hashlib, pathlib, sys, torch
sys.path.insert(0, {tests!r})
from test_gan_training import digits_table, tiny_cfg
from pipeline import device as devices, gan
with devices.distributed(torch.device("cpu")) as dist:
    run = gan._build_run(tiny_cfg(loss="wgan-gp", n_dis=2), digits_table(), [0, 1, 2], dist)
    rows = [gan.train_step(run)[1] for _ in range(3)]
    digest = hashlib.sha256(b"".join(p.detach().numpy().tobytes() for p in run.D.parameters()))
    # a file per rank: two ranks printing to one pipe can interleave their lines
    pathlib.Path(sys.argv[1], f"rank{{dist.rank}}.txt").write_text(f"{{digest.hexdigest()}} {{rows}}")
"""


@pytest.mark.slow
def test_torchrun_two_processes_on_cpu(tmp_path):
    """DDP (gloo) through torchrun: rank 0 writes; the ranks see different batches, same weights."""
    def torchrun(script: str, *args: str) -> subprocess.CompletedProcess:
        path = tmp_path / f"script{len(list(tmp_path.glob('script*')))}.py"
        path.write_text(script.format(tests=str(REPO / "tests")))
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(path), *args]
        proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return proc

    torchrun(_SCRIPT, str(tmp_path / "out"), json.dumps(dict(steps=4, checkpoint_every=2)))
    ckpt = state(tmp_path / "out" / "checkpoint-4.pt")
    assert ckpt["world_size"] == 2 and len(ckpt["rng"]["per_rank"]) == 2
    assert not torch.equal(ckpt["rng"]["per_rank"][0]["sampler"], ckpt["rng"]["per_rank"][1]["sampler"])
    assert state(tmp_path / "out" / "final.pt")["step"] == 4

    # gradients (the gradient penalty's included) are averaged: both ranks end with one D
    torchrun(_SYNC_SCRIPT, str(tmp_path))
    (d0, loss0), (d1, loss1) = ((tmp_path / f"rank{r}.txt").read_text().split(" ", 1) for r in (0, 1))
    assert d0 == d1
    assert loss0 != loss1  # ...though each computed its loss on its own batches


@cuda
def test_cuda_run(tmp_path):
    final = gan.train_gan(tiny_cfg(steps=3, device="cuda", precision="auto"), digits_table(), tmp_path,
                          progress=False)
    G, _ = gan_checkpoints.load_generator(final, "cuda")
    x = G(torch.randn(2, 16, device="cuda"), torch.tensor([0, 1], device="cuda"))
    assert x.is_cuda and x.shape == (2, 1, 8, 8) and torch.isfinite(x).all()


def test_quality_tracking_and_early_stop(tmp_path, caplog):
    """The judge scores fixed EMA samples per class; patience 1 stops at the first non-improvement
    and final.pt holds the best evaluation's EMA weights; a rerun sees the run as finished."""
    cfg = tiny_cfg(steps=40, sample_every=2, checkpoint_every=2, track_quality=True, early_stop_patience=1,
                   judge_epochs=1, lr_g=0.05, lr_d=0.05)  # a wild lr: agreement soon stops improving
    with caplog.at_level(logging.INFO, logger="augment"):
        final = gan.train_gan(cfg, digits_table(), tmp_path, progress=False)
    meta = state(final)
    rows = np.loadtxt(tmp_path / "quality.csv", delimiter=",", skiprows=1)
    steps = sorted(set(rows[:, 0].astype(int)))
    assert set(rows[:, 1].astype(int)) == {0, 1, 2} and ((rows[:, 2:4] >= 0) & (rows[:, 2:4] <= 1)).all()
    assert meta["stopped_early"] and meta["step"] == steps[-1] < 40
    # the score of a class: sqrt(agreement x recall) (recall: real images inside the samples' manifold)
    per_step = {s: np.sqrt(rows[rows[:, 0] == s, 2] * rows[rows[:, 0] == s, 3]) for s in steps}
    best = max(steps, key=lambda s: (per_step[s].min(), per_step[s].mean(), -s))
    assert meta["best_step"] == best and steps[-1] == best + 2  # patience 1: one evaluation after the best
    assert "early stop at step" in caplog.text and "judge agreement mean" in caplog.text
    assert (tmp_path / "judge.pt").is_file()
    # final.pt holds the best evaluation's EMA weights, not those of the stopping step
    ckpt = state(gan_checkpoints.checkpoint_path(tmp_path, steps[-1]))
    assert all(torch.equal(meta["g_ema"][k], ckpt["tracker"]["best_state"][k]) for k in meta["g_ema"])
    assert not all(torch.equal(meta["g_ema"][k], ckpt["g_ema"][k]) for k in meta["g_ema"])
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="augment"):
        gan.train_gan(cfg, digits_table(), tmp_path, progress=False)
    assert "already trained" in caplog.text


def test_recall_sees_a_collapsed_class_that_agreement_does_not():
    """Two classes the judge recognises perfectly; class 1's samples are one image repeated: its
    agreement stays 1 but its recall drops, and so does its score sqrt(agreement x recall)."""
    from pipeline.gan_tracking import assess, class_scores, real_features
    from pipeline.pixels import to_float

    class Judge(torch.nn.Module):  # features: the mean brightness of the left and right halves
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def features(self, x):
            return torch.stack([x[..., :4].mean((1, 2, 3)), x[..., 4:].mean((1, 2, 3))], 1)

        def head(self, f):
            return torch.stack([f[:, 0] - f[:, 1], f[:, 1] - f[:, 0]], 1)

    rng = np.random.default_rng(0)
    imgs = np.zeros((80, 8, 8, 1), np.uint8)
    labels = np.repeat([0, 1], 40)
    for i, c in enumerate(labels):  # class 0 bright on the left, class 1 on the right, varied levels
        lo, hi = (slice(0, 4), slice(4, 8)) if c == 0 else (slice(4, 8), slice(0, 4))
        imgs[i, :, lo] = rng.integers(128, 256)
        imgs[i, :, hi] = rng.integers(0, 64)
    train = ImageTable(imgs, labels, ("a", "b"))
    judge = Judge().eval()
    real = real_features(judge, train, [0, 1], seed=0)
    fake = torch.cat([to_float(imgs[:40]), to_float(imgs[40:41]).repeat(40, 1, 1, 1)])
    agree, recall = assess(judge, fake, torch.as_tensor(labels), [0, 1], real)
    assert agree == [1.0, 1.0]
    assert recall[0] == 1.0 and recall[1] < 0.2  # the repeated image covers only its own neighbourhood
    scores = class_scores(agree, recall)
    assert scores[0] == 1.0 and scores[1] == pytest.approx(np.sqrt(recall[1]))


def test_early_stop_needs_tracking():
    with pytest.raises(Exception, match="needs track_quality"):
        tiny_cfg(early_stop_patience=2)


def test_tracked_run_resumes_bit_identical(tmp_path):
    """Tracker state and judge survive a resume: same weights and quality rows as one run."""
    kw = dict(steps=12, sample_every=4, checkpoint_every=4, track_quality=True, judge_epochs=1)
    gan.train_gan(tiny_cfg(**kw), digits_table(), tmp_path / "ref", progress=False)
    gan.train_gan(tiny_cfg(**(kw | {"steps": 8})), digits_table(), tmp_path / "cut", progress=False)
    (tmp_path / "cut" / "final.pt").unlink()
    gan.train_gan(tiny_cfg(**kw), digits_table(), tmp_path / "cut", progress=False)
    assert_same_weights(state(tmp_path / "ref" / "final.pt"), state(tmp_path / "cut" / "final.pt"))
    assert (tmp_path / "ref" / "quality.csv").read_text() == (tmp_path / "cut" / "quality.csv").read_text()


def test_sngan_hier_trains_with_every_conditioning_option_resumes_and_generates(tmp_path):
    """BigGAN-style conditioning (`arch: sngan_hier`) takes the options built for sngan's
    BatchNorms (gSR, embedding noise, transitional conditioning, class head, mode seeking),
    resumes bit-identical, and samples through the plain forward (no per-class folding)."""
    from pipeline.generate import class_forward

    table = digits_table()
    opts = dict(arch="sngan_hier", gsr_weight=0.5, embed_noise=0.1, transition_start=2, transition_steps=4,
                aux_weight=0.5, ms_weight=0.3)
    full, plain = resumes_bit_identical(table, tmp_path, **opts)
    assert "shared.weight" in full["g"] and "shared.weight" not in plain["g"]
    G, _ = gan_checkpoints.load_generator(tmp_path / "full" / "final.pt")
    assert not hasattr(G, "for_class")
    z = torch.randn(5, 16)
    x = class_forward(G, 1, None)(z, torch.ones(5, dtype=torch.long))
    assert x.shape == (5, 1, 8, 8) and torch.equal(x, G(z, torch.ones(5, dtype=torch.long)))
    fp = data_fingerprint(table)
    assert config_fingerprint(tiny_cfg(arch="sngan_hier"), fp) != config_fingerprint(tiny_cfg(), fp)


# ----------------------------------------------------------------------------- classifier guidance


def test_guide_term_of_g_objective_by_hand():
    """guide_weight: G's loss adds strength * guide_weight * CE of the frozen guide on the augmented
    fakes (not the clean ones), against the intended labels."""
    from types import SimpleNamespace

    class Fixed(nn.Module):  # logits [ln 3, 0] for an image of mean 1, [0, 0] otherwise
        def forward(self, x):
            on = (x.mean(dim=(1, 2, 3)) == 1.0).float()
            return torch.stack([on * math.log(3.0), torch.zeros_like(on)], dim=1)

    run = SimpleNamespace(cfg=tiny_cfg(batch_size=1, guide_weight=0.5), loss=LOSSES["hinge"], guide=Fixed())
    fakes = (torch.zeros(1, 1, 2, 2), torch.zeros(1, 3), torch.tensor([0]))
    # hinge G at fake -1 is 1; the guide sees the augmented view (mean 1): CE -log(3/4), at strength 0.5
    g = gan_objectives.g_objective(run, torch.tensor([-1.0]), None, fakes, 0.5, torch.ones(1, 1, 2, 2))
    assert g.item() == pytest.approx(1.0 + 0.5 * 0.5 * -math.log(0.75))
    # without an augmented view the clean fakes (mean 0): CE log 2
    g = gan_objectives.g_objective(run, torch.tensor([-1.0]), None, fakes, 1.0)
    assert g.item() == pytest.approx(1.0 + 0.5 * math.log(2.0))


def test_guide_loss_stops_pushing_a_sample_the_guide_already_recognises():
    from pipeline.gan_guide import guide_loss

    class Fixed(nn.Module):  # row 0: p(class 0) = 3/4; row 1: p = 1/2 for both classes
        def forward(self, x):
            return torch.tensor([[math.log(3.0), 0.0], [0.0, 0.0]])

    x, y = torch.zeros(2, 1, 2, 2), torch.tensor([0, 0])
    ce = [-math.log(0.75), math.log(2.0)]
    assert guide_loss(Fixed(), x, y).item() == pytest.approx(sum(ce) / 2)  # until 1: the plain CE
    assert guide_loss(Fixed(), x, y, until=0.9).item() == pytest.approx(
        (ce[0] + math.log(0.9) + ce[1] + math.log(0.9)) / 2)
    # until 0.6: row 0 (p 0.75) is past it, row 1 (p 0.5) is pushed by CE - (-log 0.6)
    assert guide_loss(Fixed(), x, y, until=0.6).item() == pytest.approx((ce[1] + math.log(0.6)) / 2)


def test_guided_run_caches_its_own_guide_resumes_bit_identical_and_keeps_the_plain_fingerprint(tmp_path):
    table = digits_table()
    full, plain = resumes_bit_identical(table, tmp_path, guide_weight=1.0, guide_epochs=1)
    assert not torch.equal(plain["g"]["fc.weight"], full["g"]["fc.weight"])
    # one guide, saved for what it trains from, frozen; trained with another seed than the tracking judge
    from pipeline.gan_guide import guide_seed
    from pipeline.judge import judge_key
    saved = torch.load(tmp_path / "full" / "guide.pt", map_location="cpu", weights_only=True)
    fp = data_fingerprint(table)
    assert saved["fingerprint"] == judge_key("guide", table, guide_seed(0), 1, "cpu")
    assert not (tmp_path / "plain" / "guide.pt").exists()
    assert guide_seed(0) != 0 and guide_seed(0) != guide_seed(1)
    assert config_fingerprint(tiny_cfg(guide_weight=0.0, guide_epochs=5, guide_until=1.0), fp) == config_fingerprint(
        tiny_cfg(), fp)
    assert config_fingerprint(tiny_cfg(guide_weight=1.0, guide_until=0.5), fp) != config_fingerprint(
        tiny_cfg(guide_weight=1.0), fp)
    assert config_fingerprint(tiny_cfg(guide_weight=1.0), fp) != config_fingerprint(tiny_cfg(), fp)
    assert config_fingerprint(tiny_cfg(guide_weight=1.0, guide_epochs=2), fp) != config_fingerprint(
        tiny_cfg(guide_weight=1.0), fp)


def test_guidance_makes_samples_the_guide_labels_as_intended(tmp_path):
    """The guide's term works: after 200 steps with a strong guide weight, the guide labels more of
    the EMA samples as their intended class than it does a plain run's (same seed and data; 0.35 vs
    0.20, chance, when written)."""
    from pipeline.gan_guide import GUIDE_FILE, load_or_train_guide
    table = digits_table(classes=(0, 1, 2, 3, 4))
    kw = dict(steps=200, checkpoint_every=200, sample_every=200, ema_warmup=200, batch_size=32, guide_epochs=3)
    guided = state(gan.train_gan(tiny_cfg(**kw, guide_weight=3.0), table, tmp_path / "guided", progress=False))
    guided_mtime = (tmp_path / "guided" / GUIDE_FILE).stat().st_mtime_ns
    plain = state(gan.train_gan(tiny_cfg(**kw), table, tmp_path / "plain", progress=False))
    from pipeline.gan_guide import guide_seed
    guide = load_or_train_guide(table, 3, guide_seed(0), torch.device("cpu"), tmp_path / "guided")  # the run's, loaded
    assert (tmp_path / "guided" / GUIDE_FILE).stat().st_mtime_ns == guided_mtime  # read back, not trained again

    def agreement(payload: dict) -> float:
        cfg = tiny_cfg(**kw)
        G, _ = GAN_ARCHS[cfg.arch].build((1, 8, 8), 5, cfg.z_dim, cfg.size, cfg.width)
        G.load_state_dict(payload["g_ema"])
        G.eval()
        y = torch.arange(5).repeat_interleave(40)
        with torch.no_grad():
            x = G(torch.randn(len(y), cfg.z_dim, generator=torch.Generator().manual_seed(1)), y)
            return float((guide(x).argmax(1) == y).float().mean())

    assert agreement(guided) > agreement(plain) + 0.1


def test_a_cached_judge_loaded_from_disk_scores_as_the_one_just_trained(tmp_path):
    """judge.cached_judge: the judge read back from its file gives the fresh one's logits bit for bit
    (both channels_last), so a resumed run scores, and a guided one learns, exactly as before."""
    from pipeline.config import EvaluateConfig
    from pipeline.judge import cached_judge, fit_judge

    table = digits_table()
    empty = ImageTable(table.images[:0], table.labels[:0], table.class_names)
    fit = lambda: fit_judge("guide", table, empty, EvaluateConfig(gan_quality=False, device="cpu", cpu_threads=1),  # noqa: E731
                            5, epochs=1)
    fresh = cached_judge(tmp_path / "judge.pt", "fp", table, fit)
    loaded = cached_judge(tmp_path / "judge.pt", "fp", table, lambda: pytest.fail("trained again"))
    x = torch.randn(64, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(fresh(x), loaded(x))


def test_a_run_with_other_gan_params_reuses_the_guide_and_the_tracking_judge(tmp_path, monkeypatch):
    """guide.pt and judge.pt are keyed by what they train from (judge.judge_key), not by the GAN's
    params: another step count or mode-seeking weight in the same folder reads them back; other
    guide epochs or another seed train a new guide."""
    from pipeline import judge as J
    table = digits_table(classes=(0, 1, 2))
    fits = []
    real = J.fit_judge
    monkeypatch.setattr(J, "fit_judge", lambda use, *a, **k: fits.append(use) or real(use, *a, **k))
    for mod in ("pipeline.gan_guide", "pipeline.gan_tracking"):
        monkeypatch.setattr(f"{mod}.fit_judge", J.fit_judge)
    kw = dict(steps=4, checkpoint_every=4, sample_every=4, guide_weight=1.0, guide_epochs=1, track_quality=True,
              judge_epochs=1)
    gan.train_gan(tiny_cfg(**kw), table, tmp_path, progress=False)
    assert sorted(fits) == ["guide", "tracking"]
    gan.train_gan(tiny_cfg(**kw, ms_weight=0.3), table, tmp_path, progress=False)  # another run, same judges
    assert sorted(fits) == ["guide", "tracking"]
    gan.train_gan(tiny_cfg(**{**kw, "guide_epochs": 2}), table, tmp_path, progress=False)
    assert sorted(fits) == ["guide", "guide", "tracking"]
