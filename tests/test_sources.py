"""Every reader on tiny data it writes itself, and each bad input's one-line error."""

import json

import numpy as np
import pytest
from PIL import Image

from pipeline.errors import DataError
from pipeline.sources import ImageSpec, read_source

from conftest import SHARED_DATASETS


def test_digits_is_embedded():
    src = read_source("digits", ImageSpec())
    assert src.train.images.shape == (1797, 8, 8, 1)
    assert src.test is None
    assert src.train.images.max() == 255


def test_digits_resized_to_rgb():
    src = read_source("digits", ImageSpec(size=16, channels=3))
    assert src.train.images.shape == (1797, 16, 16, 3)


def test_npz_folder(npz_folder):
    src = read_source(str(npz_folder), ImageSpec())
    assert src.train.class_names == ("zero", "one", "two")
    assert src.train.counts().tolist() == [12, 8, 6]
    assert src.test.counts().tolist() == [3, 3, 3]
    assert src.train.images.shape[1:] == (8, 8, 1)


def test_image_folder_png_and_jpeg(image_folder):
    src = read_source(str(image_folder), ImageSpec())
    assert src.train.class_names == ("class_0", "class_1", "class_2")
    assert src.train.counts().tolist() == [5, 4, 3]
    assert src.train.images.shape[1:] == (8, 8, 3)
    gray = read_source(str(image_folder), ImageSpec(size=12, channels=1))
    assert gray.train.images.shape[1:] == (12, 12, 1)


def test_image_folder_with_train_and_test(tmp_path, image_folder):
    root = tmp_path / "split"
    (root).mkdir()
    image_folder.rename(root / "train")
    (root / "test" / "class_1").mkdir(parents=True)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(root / "test" / "class_1" / "a.png")
    src = read_source(str(root), ImageSpec())
    assert src.test.counts().tolist() == [0, 1, 0]


def test_corrupt_image_names_the_file(image_folder):
    bad = image_folder / "class_1" / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    with pytest.raises(DataError, match="broken.png: cannot decode image"):
        read_source(str(image_folder), ImageSpec())


def test_zero_byte_image(image_folder):
    (image_folder / "class_0" / "empty.png").write_bytes(b"")
    with pytest.raises(DataError, match="empty.png: empty image"):
        read_source(str(image_folder), ImageSpec())


def test_image_of_another_size_without_resize(image_folder):
    Image.fromarray(np.zeros((9, 9, 3), np.uint8)).save(image_folder / "class_0" / "odd.png")
    with pytest.raises(DataError, match="image 5 is"):
        read_source(str(image_folder), ImageSpec())
    with pytest.raises(DataError, match="odd.png: image is 9x9, expected 8x8; set data.resize=true"):
        read_source(str(image_folder), ImageSpec(size=8, resize=False))
    assert read_source(str(image_folder), ImageSpec(size=8)).train.images.shape[1:3] == (8, 8)


@pytest.mark.parametrize(
    "mutate, fragment",
    [
        (lambda x, y: (x, np.where(np.arange(len(y)) == 4, 7, y)), "row 4: label 7 out of range 0..2"),
        (lambda x, y: (x, y[:-1]), "26 images but y has shape (25,)"),
        (lambda x, y: (x.astype(np.float32) / 255, y), "dtype float32; store pixels as uint8"),
        (lambda x, y: (np.where(np.arange(len(y))[:, None, None] == 2, np.nan, x / 255.0), y), "row 2 has non-finite pixels"),
        (lambda x, y: (x, y.astype(np.float64)), "labels must be integers"),
    ],
)
def test_bad_npz_inputs(npz_folder, mutate, fragment):
    with np.load(npz_folder / "train.npz") as z:
        x, y = mutate(z["x"], z["y"])
    np.savez(npz_folder / "train.npz", x=x, y=y)
    with pytest.raises(DataError) as e:
        read_source(str(npz_folder), ImageSpec())
    assert fragment in str(e.value) and "train.npz" in str(e.value)


def test_truncated_npz(npz_folder):
    data = (npz_folder / "train.npz").read_bytes()
    (npz_folder / "train.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="train.npz: cannot read npz"):
        read_source(str(npz_folder), ImageSpec())


def test_duplicate_and_control_class_names(npz_folder):
    (npz_folder / "classes.json").write_text(json.dumps(["a", "b", "a"]))
    with pytest.raises(DataError, match="duplicate class name"):
        read_source(str(npz_folder), ImageSpec())
    (npz_folder / "classes.json").write_text(json.dumps(["a", "b\u0000", "c"]))
    with pytest.raises(DataError, match="control character"):
        read_source(str(npz_folder), ImageSpec())


def test_missing_and_empty_sources(tmp_path):
    with pytest.raises(DataError, match="not found"):
        read_source(str(tmp_path / "nope"), ImageSpec())
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="empty or has no recognised layout"):
        read_source(str(tmp_path / "empty"), ImageSpec())
    (tmp_path / "noimg" / "a").mkdir(parents=True)
    with pytest.raises(DataError, match="no images found"):
        read_source(str(tmp_path / "noimg"), ImageSpec())


def _source_md_counts(folder):
    """Per-class 'label name: train / test' lines of a SOURCE.md."""
    import re

    counts = {}
    for line in (folder / "SOURCE.md").read_text().splitlines():
        m = re.match(r"- (\d+) .*: (\d+) / (\d+)$", line)
        if m:
            counts[int(m.group(1))] = (int(m.group(2)), int(m.group(3)))
    return counts


@pytest.mark.slow
@pytest.mark.parametrize("name", ["mnist", "gtsrb"])
def test_shared_datasets_match_their_source_md(name):
    folder = SHARED_DATASETS / name
    if not (folder / "train.npz").exists():
        pytest.skip(f"{folder} is absent (the shared datasets live in ../shared/datasets)")
    src = read_source(str(folder), ImageSpec())
    expected = _source_md_counts(folder)
    assert len(expected) == src.train.num_classes
    assert src.train.counts().tolist() == [expected[c][0] for c in sorted(expected)]
    assert src.test.counts().tolist() == [expected[c][1] for c in sorted(expected)]
    if name == "gtsrb":
        assert src.train.groups is not None and src.train.image_shape == (32, 32, 3)
