"""Classifier registry: shapes, the small-image ResNet stem, seeded initialisation, input scaling."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pipeline.models import CLASSIFIERS
from pipeline.models.classifiers import Classifier, build_classifier


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 28, 28), (3, 32, 32), (1, 5, 5), (3, 13, 11)])
def test_small_cnn_shapes(shape):
    model = build_classifier("small_cnn", shape, 7, _gen(0)).eval()
    x = torch.randn(3, *shape)
    assert model(x).shape == (3, 7)
    assert model.features(x).shape == (3, model.feature_dim)


def test_resnet18_small_image_stem_and_shapes():
    model = build_classifier("resnet18", (1, 8, 8), 4, _gen(0)).eval()
    assert isinstance(model, Classifier)
    stem = model.body.conv1
    assert stem.kernel_size == (3, 3) and stem.stride == (1, 1) and stem.in_channels == 1
    assert isinstance(model.body.maxpool, nn.Identity)
    x = torch.randn(2, 1, 8, 8)
    assert model(x).shape == (2, 4) and model.features(x).shape == (2, 512)


def test_registry_names_and_unknown_name():
    assert set(CLASSIFIERS) == {"small_cnn", "resnet18"}
    with pytest.raises(ValueError, match="small_cnn"):
        build_classifier("vgg", (1, 8, 8), 2, _gen(0))


def test_initialisation_comes_from_the_generator_only():
    torch.manual_seed(1)
    a = build_classifier("small_cnn", (1, 8, 8), 3, _gen(5))
    state = torch.random.get_rng_state()
    torch.manual_seed(2)
    b = build_classifier("small_cnn", (1, 8, 8), 3, _gen(5))
    c = build_classifier("small_cnn", (1, 8, 8), 3, _gen(6))
    for (name, pa), pb, pc in zip(a.state_dict().items(), b.state_dict().values(), c.state_dict().values()):
        assert torch.equal(pa, pb), name
    assert not all(torch.equal(pa, pc) for pa, pc in zip(a.parameters(), c.parameters()))
    # building does not advance the caller's global RNG
    torch.set_rng_state(state)
    build_classifier("small_cnn", (1, 8, 8), 3, _gen(5))
    assert torch.equal(torch.random.get_rng_state(), state)
