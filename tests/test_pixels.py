"""The two pixel conversions (pipeline/pixels.py) against hand-computed values."""

from __future__ import annotations

import numpy as np
import torch

from pipeline.pixels import to_float, to_uint8


def test_to_float_scales_to_minus_one_one_nchw_contiguous():
    imgs = np.array([[[[0], [255]], [[127], [128]]]], dtype=np.uint8)  # (1, 2, 2, 1)
    x = to_float(imgs)
    assert x.shape == (1, 1, 2, 2) and x.is_contiguous() and x.dtype == torch.float32
    assert x[0, 0, 0, 0] == -1.0 and x[0, 0, 0, 1] == 1.0
    assert abs(x[0, 0, 1, 0].item() - (127 / 127.5 - 1.0)) < 1e-6
    assert to_float(np.zeros((2, 4, 5, 3), np.uint8)).shape == (2, 3, 4, 5)


def test_uint8_float_round_trip_and_clipping():
    x = np.arange(256, dtype=np.uint8).reshape(1, 16, 16, 1).repeat(3, axis=-1)
    np.testing.assert_array_equal(to_uint8(to_float(x)).numpy(), x)
    # out of range clips; halves round to even as torch.round does: (0 + 1) * 127.5 = 127.5 -> 128
    out = to_uint8(torch.tensor([-3.0, 3.0, 0.0]).view(1, 1, 1, 3)).numpy()
    np.testing.assert_array_equal(out, [[[[0], [255], [128]]]])


def test_to_uint8_leaves_its_input_alone():
    x = torch.zeros(1, 1, 1, 1)
    to_uint8(x)
    assert x.item() == 0.0
