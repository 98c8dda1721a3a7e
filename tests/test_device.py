"""Device and precision selection; CUDA paths run only where CUDA is visible."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pipeline import device as devices
from pipeline.errors import ConfigError

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def test_select_device_cpu_and_auto_without_cuda(monkeypatch):
    assert devices.select_device("cpu") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert devices.select_device("auto") == torch.device("cpu")
    with pytest.raises(ConfigError, match="no CUDA device is visible"):
        devices.select_device("cuda")
    with pytest.raises(ConfigError, match="not one of auto, cpu, cuda"):
        devices.select_device("tpu")


def test_precision_fp32_and_forced_bf16_on_cpu():
    cpu = torch.device("cpu")
    assert devices.choose_precision("fp32", cpu) is None
    assert devices.choose_precision("bf16", cpu) is torch.bfloat16
    with pytest.raises(ConfigError, match="not one of auto, fp32, bf16"):
        devices.choose_precision("fp16", cpu)


@pytest.mark.parametrize(
    "features, faster, expected",
    [([], True, None), (["avx512_bf16"], False, None), (["amx_bf16"], True, torch.bfloat16)],
)
def test_auto_precision_on_cpu_needs_native_bf16_and_a_win(monkeypatch, features, faster, expected):
    monkeypatch.setattr(devices, "cpu_bf16_features", lambda: features)
    monkeypatch.setattr(devices, "cpu_bf16_is_faster", lambda: faster)
    assert devices.choose_precision("auto", torch.device("cpu")) is expected


def test_auto_precision_on_this_cpu_is_consistent_with_its_features():
    got = devices.choose_precision("auto", torch.device("cpu"))
    if not devices.cpu_bf16_features():  # e.g. the AVX2-only EPYC we develop on: emulated bf16
        assert got is None
    assert isinstance(devices.cpu_bf16_is_faster(n=64, repeats=1), bool)


def test_autocast_contexts():
    a = torch.ones(4, 4)
    with devices.autocast(torch.device("cpu"), None):
        assert (a @ a).dtype == torch.float32
    with devices.autocast(torch.device("cpu"), torch.bfloat16):
        assert (a @ a).dtype == torch.bfloat16


def test_dist_info_from_torchrun_env(monkeypatch):
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "1")
    info = devices.dist_info()
    assert (info.rank, info.world_size, info.local_rank, info.is_main) == (3, 4, 1, False)


def test_single_process_helpers_leave_the_model_alone():
    model = nn.Conv2d(1, 2, 3)
    info = devices.DistInfo()
    assert devices.wrap_ddp(model, torch.device("cpu"), info) is model
    assert devices.maybe_compile(model, True, torch.device("cpu")) is model
    prepared = devices.prepare_module(model, torch.device("cpu"))
    assert prepared.weight.is_contiguous(memory_format=torch.channels_last)
    x = devices.to_device_images(torch.rand(2, 1, 5, 5), torch.device("cpu"))
    assert x.is_contiguous(memory_format=torch.channels_last)
    with devices.distributed(torch.device("cpu")) as got:
        assert got.world_size == 1 and not torch.distributed.is_initialized()


@cuda
def test_cuda_device_precision_and_layout():
    dev = devices.select_device("cuda")
    assert dev.type == "cuda" and devices.select_device("auto").type == "cuda"
    expected = torch.bfloat16 if torch.cuda.is_bf16_supported() else None
    assert devices.choose_precision("auto", dev) is expected
    model = devices.prepare_module(nn.Conv2d(3, 4, 3), dev)
    assert model.weight.is_cuda and model.weight.is_contiguous(memory_format=torch.channels_last)
    with devices.autocast(dev, expected):
        out = model(devices.to_device_images(torch.rand(2, 3, 8, 8), dev))
    assert out.dtype == (expected or torch.float32)


def test_precision_name_records_a_choose_precision_outcome():
    from pipeline.device import precision_name

    assert precision_name(None) == "fp32" and precision_name(torch.bfloat16) == "bf16"
