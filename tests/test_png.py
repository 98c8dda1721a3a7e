"""The PNG codec (`pipeline.png`): stored and deflated batches that any decoder reads, the Arrow
buffer of stored PNGs, and the same bytes whatever the thread count."""

from __future__ import annotations

import io as pyio

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

from pipeline import png

@pytest.mark.parametrize("level", [0, 6])
@pytest.mark.parametrize("shape", [(5, 7, 3, 1), (3, 1, 9, 3), (2, 33, 17, 3), (1, 200, 120, 3)])
def test_encode_png_batch_writes_pngs_pillow_reads_back(shape, level):
    """Both the stored PNGs of the Parquet shards (level 0; 200x120x3 needs several 64 KiB stored
    deflate blocks) and the deflated ones of the ImageFolder export."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, shape, dtype=np.uint8)
    for data, img in zip(png.encode_png_batch(images, level), images):
        with Image.open(pyio.BytesIO(data)) as im:
            im.load()  # checks every CRC and the zlib stream
            assert im.format == "PNG" and im.mode == ("L" if shape[-1] == 1 else "RGB")
            np.testing.assert_array_equal(np.asarray(im).reshape(img.shape), img)
    with pytest.raises(ValueError, match="C in"):
        png.encode_png_batch(np.zeros((1, 2, 2, 4), np.uint8))


def test_stored_pngs_are_one_arrow_buffer_and_too_many_are_refused_before_any_allocation():
    images = np.random.default_rng(2).integers(0, 256, (6, 5, 4, 3), dtype=np.uint8)
    arr = png.stored_png_array(images)
    assert arr.type == pa.binary() and len(arr) == 6 and len({len(b) for b in arr.to_pylist()}) == 1
    assert arr.to_pylist() == png.encode_png_batch(images, 0)
    huge = np.broadcast_to(np.zeros((1, 1000, 1000, 3), np.uint8), (800, 1000, 1000, 3))  # no memory behind it
    with pytest.raises(ValueError, match="800 PNGs of 3001293 bytes exceed an Arrow binary array's 2 GiB"):
        png.stored_png_array(huge)


def test_encode_png_batch_gives_the_same_bytes_whatever_the_thread_count():
    """Deflating levels run in threads (level 0 is one numpy pass, `stored_png_array`)."""
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (3 * png.PNG_ROWS_PER_THREAD + 5, 4, 6, 1), dtype=np.uint8)
    one = png.encode_png_batch(images, png.PNG_LEVEL_LOOSE, threads=1)
    assert len(one) == len(images)
    for threads in (2, 3):
        assert png.encode_png_batch(images, png.PNG_LEVEL_LOOSE, threads=threads) == one
    assert one[-1] == png.encode_png_batch(images[-1:], png.PNG_LEVEL_LOOSE, threads=1)[0]  # in order
