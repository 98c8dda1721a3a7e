"""The bad-input catalogue: each case runs the CLI (`pipeline.cli.main` in this process; a sample as
real processes) in a project whose earlier stages have run, and must exit non-zero with one line
naming the file, row or key and what to do, no traceback, earlier outputs unchanged. Awkward
inputs that must work (one image in a class, odd class names, resizing) are checked at the end."""

from __future__ import annotations

import contextlib
import hashlib
import io as pyio
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from conftest import run_cli, tiny_arrays
from pipeline import cli

PARAMS = """\
data: {source: src, long_tail: {profile: none}}
train_gan: {steps: 4, batch_size: 8, checkpoint_every: 2, sample_every: 4, ema_warmup: 0, device: cpu}
generate: {shard_size: 5}
evaluate: {strategies: [none, gan], seeds: 1, epochs: 1, gan_quality: false, device: cpu}
"""
NAMES = ["zero", "one", "two"]


def augment(root: Path, *args: str) -> int:
    """`augment ARGS -q` in `root`, in this process; the exit code."""
    with contextlib.chdir(root):
        return cli.main([*args, "-q"])


def write_npz(folder: Path, counts=(12, 8, 6), names=NAMES, size=8, edit: Callable | None = None) -> str:
    """train.npz (+ test.npz, classes.json) in the shared-datasets layout; `edit(x, y) -> (x, y)` spoils it."""
    folder.mkdir(parents=True)
    x, y = tiny_arrays(counts, size=size)
    x = x[..., 0]
    if edit is not None:
        x, y = edit(x, y)
    np.savez(folder / "train.npz", x=x, y=y)
    xt, yt = tiny_arrays((3,) * len(counts), size=size, seed=1)
    np.savez(folder / "test.npz", x=xt[..., 0], y=yt)
    if names is not None:
        (folder / "classes.json").write_text(json.dumps(names, ensure_ascii=False))
    return folder.name


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    """A project where prepare, plan, train-gan and generate have run: the earlier outputs."""
    root = tmp_path_factory.mktemp("bad-inputs") / "base"
    root.mkdir()
    write_npz(root / "src")
    (root / "params.yaml").write_text(PARAMS)
    for stage in ("prepare", "plan", "train-gan", "generate"):
        assert augment(root, stage) == 0, stage
    return root


@pytest.fixture
def project(base, tmp_path) -> Path:
    root = tmp_path / "p"
    shutil.copytree(base, root)
    return root


def snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted((root / "data").rglob("*")) if p.is_file()}


# ---- builders for the cases ----------------------------------------------------------------------

def png(size=8, mode="L", value=90) -> bytes:
    buf = pyio.BytesIO()
    Image.new(mode, (size, size), value if mode == "L" else (value,) * 3).save(buf, format="PNG")
    return buf.getvalue()


def image_folder(root: Path, extra: dict[str, bytes]) -> str:
    """imgs/<a|b>/<i>.png, 8x8 grayscale, plus `extra` files."""
    for c in ("a", "b"):
        (root / "imgs" / c).mkdir(parents=True, exist_ok=True)
        for i in range(3):
            (root / "imgs" / c / f"{i}.png").write_bytes(png(value=40 + 100 * (c == "b") + i))
    for rel, data in extra.items():
        (root / "imgs" / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / "imgs" / rel).write_bytes(data)
    return "imgs"


def prepare(source: str, *more: str) -> list[str]:
    return ["prepare", "--set", f"data.source={source}", *more]


def imgs(extra: dict[str, bytes], *more: str) -> Callable[[Path], list[str]]:
    return lambda r: prepare(image_folder(r, extra), *more)


def npz(edit=None, *more: str, **kw) -> Callable[[Path], list[str]]:
    return lambda r: prepare(write_npz(r / "bad", edit=edit, **kw), *more)


def setting(command: str, *pairs: str) -> Callable[[Path], list[str]]:
    return lambda r: [command, *(a for p in pairs for a in ("--set", p))]


def with_file(rel: str, content: bytes | str | Callable[[Path], None], command: str, *more: str):
    """Replace (or edit, with a callable) the file `rel` of the project, then run `command`."""
    def setup(r: Path) -> list[str]:
        if callable(content):
            content(r / rel)
        else:
            (r / rel).write_bytes(content.encode() if isinstance(content, str) else content)
        return [command, *more]
    return setup


def after(first: list[str], then: list[str]) -> Callable[[Path], list[str]]:
    """Run `first` successfully (it changes the earlier outputs), then the failing `then`."""
    def setup(r: Path) -> list[str]:
        assert augment(r, *first) == 0
        return then
    return setup


def edit_checkpoint(**fields):
    def edit(path: Path) -> None:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        torch.save({**ckpt, **fields}, path)
    return edit


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def shard_with_other_columns(path: Path) -> None:
    """Shard 1 rewritten with other columns, and the manifest's sha256 updated to match it."""
    pq.write_table(pa.table({"img": [b"x"], "lbl": [1]}), path)
    manifest_path = path.parent.parent / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    for f in manifest["files"]:
        if f["path"] == f"data/{path.name}":
            f["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    manifest_path.write_text(json.dumps(manifest))


def flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def remove_manifest(path: Path) -> None:
    path.unlink()


def parquet_source(r: Path, table: pa.Table) -> list[str]:
    pq.write_table(table, r / "bad.parquet")
    return prepare("bad.parquet")


def float_pixels(x, y):
    return x.astype(np.float32) / 255, y


def nan_pixels(x, y):
    x = x.astype(np.float32)
    x[4, 2, 3] = np.nan
    return x, y


def folder_without_images(r: Path) -> list[str]:
    (r / "noimg/a").mkdir(parents=True)
    (r / "noimg/a/readme.txt").write_text("no image here")
    return prepare("noimg")


def classes_json(text: str) -> Callable[[Path], list[str]]:
    def setup(r: Path) -> list[str]:
        write_npz(r / "bad", names=None)
        (r / "bad/classes.json").write_text(text)
        return prepare("bad")
    return setup


def corrupt_npz(r: Path) -> list[str]:
    (r / "bad").mkdir()
    (r / "bad/train.npz").write_bytes(b"PK\x03\x04 this is no zip archive")
    return prepare("bad")


def npz_without_labels(r: Path) -> list[str]:
    (r / "bad").mkdir()
    np.savez(r / "bad/train.npz", x=np.zeros((4, 8, 8), np.uint8))
    return prepare("bad")


def other_size_test_split(r: Path) -> list[str]:
    write_npz(r / "bad")
    np.savez(r / "bad/test.npz", x=np.zeros((3, 10, 10), np.uint8), y=np.arange(3))
    return prepare("bad")


def negative_label(x, y):
    y = y.copy()
    y[2] = -1
    return x, y


# ---- the catalogue ---------------------------------------------------------------------------------

@dataclass
class Case:
    name: str
    setup: Callable[[Path], list[str]]  # prepares the project, returns the failing command's args
    says: list[str]  # fragments of the one error line: the file/row/key, and what to do
    code: int = 2
    marks: list = field(default_factory=list)


SHARD1 = "data/synthetic/data/train-00001-of-00002.parquet"
CASES = [
    # sources: prepare
    Case("missing source", lambda r: prepare("nowhere"), ["data.source: 'nowhere' not found", "use 'digits'"]),
    Case("empty folder", lambda r: (r / "empty").mkdir() or prepare("empty"),
         ["'empty' is empty or has no recognised layout", "<class>/ folders"]),
    Case("folder without images", folder_without_images, ["noimg: no images found (looked for .bmp"]),
    Case("corrupt image", imgs({"a/bad.png": b"this is not an image"}),
         ["imgs/a/bad.png: cannot decode image", "replace or remove it"]),
    Case("truncated image", imgs({"a/cut.png": png()[:45]}), ["imgs/a/cut.png: cannot decode image", "truncated"]),
    Case("zero-byte image", imgs({"a/empty.png": b""}),
         ["imgs/a/empty.png: empty image (0 bytes)", "replace or remove"]),
    Case("image of another size, resizing off", imgs({"a/big.png": png(12)}, "--set", "data.image_size=8",
                                                     "--set", "data.resize=false"),
         ["imgs/a/big.png: image is 12x12, expected 8x8", "set data.resize=true"]),
    Case("image of another size, no size set", imgs({"a/big.png": png(12)}),
         ["imgs/a/big.png: image 3 is 12x12 with 1 channel(s), 0.png is 8x8",
          "set data.image_size and data.channels"]),
    Case("image of another mode", imgs({"a/rgb.png": png(mode="RGB")}),
         ["imgs/a/rgb.png: image 3 is 8x8 with 3 channel(s)", "set data.image_size and data.channels"]),
    Case("label out of range", npz(negative_label), ["bad/train.npz: row 2: label -1 out of range 0..2 (3 classes)"]),
    Case("labels and images of different counts", npz(lambda x, y: (x, y[:-1])),
         ["bad/train.npz: 26 images but y has shape (25,)", "one label per image"]),
    Case("float pixels", npz(float_pixels), ["bad/train.npz: x has dtype float32", "store pixels as uint8"]),
    Case("NaN pixels", npz(nan_pixels), ["bad/train.npz: x row 4 has non-finite pixels", "fix or drop it"]),
    Case("pixels above 255", npz(lambda x, y: (x.astype(np.int16) + 250, y)),
         ["bad/train.npz: x has values outside 0..255", "store pixels as uint8"]),
    Case("one class only", npz(counts=(12,), names=["only"]),
         ["1 class(es); need at least two"]),
    Case("a class without images", npz(names=NAMES + ["three"]),
         ["class(es) 'three' have no image", "remove the class from bad/classes.json"]),
    Case("an ImageFolder class folder without images", imgs({"c/notes.txt": b"no image here"}),
         ["imgs (train): class(es) 'c' have no image; its folder in imgs holds no image file (.bmp",
          "add images to it or remove the folder"]),
    Case("a Parquet label that no row has", lambda r: parquet_source(r, pa.table(
        {"image": pa.array([{"bytes": png(), "path": None}] * 4), "label": pa.array([0, 0, 2, 2], pa.int64())})),
         ["class(es) '1' have no image; add rows with that label to bad.parquet", "the label column's classes"]),
    Case("duplicate class names", npz(names=["a", "a", "b"]),
         ["bad/classes.json: duplicate class name(s) 'a'", "names must be unique"]),
    Case("NUL in a class name", npz(names=["ze\x00ro", "one", "two"]),
         ["bad/classes.json: class 0 name", "contains a control character", "rename it"]),
    Case("classes.json not a list", classes_json('{"zero": 0}'),
         ["bad/classes.json: expected a JSON list of class names, got dict"]),
    Case("classes.json not JSON", classes_json('["zero", "one",'),
         ["bad/classes.json: not valid JSON", "expected a list of class names"]),
    Case("corrupt npz", corrupt_npz, ["bad/train.npz: cannot read npz", "corrupt or not an .npz"]),
    Case("npz without labels", npz_without_labels,
         ["bad/train.npz: missing array 'y'", "expected x (images) and y (labels)"]),
    Case("test images of another size", other_size_test_split,
         ["bad: test images are (10, 10, 1), train images (8, 8, 1)", "set data.image_size and data.channels"]),
    Case("Parquet source with a wrong schema", lambda r: parquet_source(r, pa.table({"img": [b"x"], "lbl": [0]})),
         ["bad.parquet: missing column(s) image, label", "expected the Hugging Face image layout"]),
    Case("Parquet source with a null label", lambda r: parquet_source(r, pa.table(
        {"image": pa.array([{"bytes": png(), "path": None}] * 2), "label": pa.array([0, None], pa.int64())})),
         ["bad.parquet row 1: label is null", "every row needs a label"]),
    Case("long-tail counts of the wrong length", setting("prepare", "data.long_tail.profile=counts",
                                                         "data.long_tail.counts=[3, 2]"),
         ["data.long_tail.counts must list 3 counts (one per class), got 2"]),
    Case("deepsmote profile on 3 classes", setting("prepare", "data.long_tail.profile=deepsmote"),
         ["the deepsmote profile is for 10 classes, the data has 3", "use data.long_tail.profile=exponential"]),
    Case("long-tail counts above the data", setting("prepare", "data.long_tail.profile=counts",
                                                    "data.long_tail.counts=[50, 2, 2]"),
         ["long-tail profile wants 50 images of class 0 but the data has 11", "lower data.long_tail.counts"]),
    # params
    Case("misspelled key", setting("plan", "train_gan.stpes=5"),
         ["unknown key 'train_gan.stpes' (did you mean 'train_gan.steps'?)", "valid keys here:"]),
    Case("a --set error names --set, not params.yaml", setting("plan", "train_gan.steps=0"),
         ["error: --set: train_gan.steps = 0: Input should be greater than or equal to 1"]),
    Case("true as a step count", setting("train-gan", "train_gan.steps=true"),
         ["--set: train_gan.steps = True: expected a number, not true/false"]),
    Case("a float as a step count", setting("train-gan", "train_gan.steps=2.5"),
         ["--set: train_gan.steps = 2.5: expected an integer"]),
    Case("misspelled section in params.yaml", with_file("params.yaml", PARAMS + "evaulate: {seeds: 2}\n", "plan"),
         ["params.yaml: unknown key 'evaulate' (did you mean 'evaluate'?)"]),
    Case("zero steps", setting("train-gan", "train_gan.steps=0"),
         ["train_gan.steps = 0: Input should be greater than or equal to 1"]),
    Case("negative batch size", setting("train-gan", "train_gan.batch_size=-8"),
         ["train_gan.batch_size = -8: Input should be greater than or equal to 1"]),
    Case("zero evaluation seeds", setting("evaluate", "evaluate.seeds=0"), ["evaluate.seeds = 0: Input should be"]),
    Case("negative seed", setting("train-gan", "train_gan.seed=-1"),
         ["train_gan.seed = -1: Input should be greater than or equal to 0"]),
    Case("zero shard size", setting("generate", "generate.shard_size=0"), ["generate.shard_size = 0"]),
    Case("unknown arch", setting("train-gan", "train_gan.arch=stylegan"),
         ["train_gan.arch = 'stylegan': 'stylegan' is not one of:", "sngan"]),
    Case("unknown loss", setting("train-gan", "train_gan.loss=hinj"), ["train_gan.loss = 'hinj'", "hinge"]),
    Case("unknown strategy", setting("evaluate", "evaluate.strategies=[none, mixup]"),
         ["evaluate.strategies", "'mixup' is not one of:", "smote"]),
    Case("unknown classifier", setting("evaluate", "evaluate.classifier=vit"),
         ["evaluate.classifier = 'vit'", "small_cnn"]),
    Case("unknown DiffAugment policy", setting("train-gan", "train_gan.diffaug=color,blur"),
         ["train_gan.diffaug", "policy 'blur' is not one of:", "translation"]),
    Case("params.yaml not YAML", with_file("params.yaml", "data: [source\n", "plan"),
         ["params.yaml line", "not valid YAML; fix the syntax"]),
    Case("params.yaml not a mapping", with_file("params.yaml", "- data\n", "plan"),
         ["params.yaml: expected a mapping of sections"]),
    # plan
    Case("strategy names an unknown class", setting("plan", "plan.sampling_strategy={seven: 20}"),
         ["plan.sampling_strategy", "'seven', which is not in the data; valid classes:", "'zero'"]),
    Case("impossible ratio", setting("plan", "plan.sampling_strategy=0.5"),
         ["ratio 0.5 targets 5 images per class, but class 'one' already has 7", "use a larger ratio"]),
    Case("ratio above one", setting("plan", "plan.sampling_strategy=1.5"),
         ["plan.sampling_strategy: sampling_strategy ratio must be in (0, 1], got 1.5"]),
    Case("unknown strategy name", setting("plan", "plan.sampling_strategy=majority"),
         ["sampling_strategy 'majority' is not one of", "'not majority'"]),
    Case("target below the count", setting("plan", "plan.sampling_strategy={zero: 1}"),
         ["sampling_strategy['zero'] = 1 is below the 11 images", "over-sampling never removes images"]),
    Case("a plan too large for memory and disk", setting("plan", "plan.sampling_strategy=1e12"),
         ["plan.sampling_strategy = 1000000000000: the plan adds 2,999,999,999,977 images of 64 bytes",
          "more than the memory available", "lower plan.sampling_strategy"]),
    Case("negative target", setting("plan", "plan.sampling_strategy={two: -5}"),
         ["sampling_strategy['two'] must be a count >= 0, got -5"]),
    # the GAN and its checkpoints
    Case("train_gan.classes names no class", setting("train-gan", "train_gan.classes=[nine]"),
         ["train_gan.classes: 'nine' is not a class of the data; valid: zero, one, two"]),
    Case("checkpoint of another dataset", with_file("data/models/gan/final.pt", edit_checkpoint(
        class_names=["cat", "dog", "eel"]), "generate"),
         ["data/models/gan/final.pt: generator was trained on classes ['cat', 'dog', 'eel']",
          "run `augment train-gan` again"]),
    Case("checkpoint of another image size", after(["prepare", "--set", "data.image_size=16"],
                                                              ["generate", "--set", "data.image_size=16"]),
         ["final.pt: generator makes 8x8 images with 1 channel(s), the prepared data is 16x16 with 1",
          "run `augment train-gan` again"]),
    Case("checkpoint of another arch", setting("generate", "train_gan.arch=dcgan"),
         ["final.pt: trained with train_gan.arch = 'sngan', the params now say 'dcgan'", "run `augment train-gan`"]),
    # a field added after the run (final.pt does not record it at its neutral value) reads as that value
    Case("checkpoint trained without a later option", setting("generate", "train_gan.lecam_weight=0.3"),
         ["final.pt: trained with train_gan.lecam_weight = 0.0, the params now say 0.3", "run `augment train-gan`"]),
    Case("checkpoint of other images", after(["prepare", "--set", "data.split_seed=3"],
                                                        ["generate", "--set", "data.split_seed=3"]),
         ["final.pt: trained on other images than data/prepared/train.parquet", "run `augment train-gan` again"]),
    Case("truncated checkpoint", with_file("data/models/gan/final.pt", truncate, "generate"),
         ["data/models/gan/final.pt: cannot be read as a GAN checkpoint", "retrain it"]),
    Case("foreign checkpoint", with_file("data/models/gan/final.pt", lambda p: torch.save({"w": torch.ones(2)}, p),
                                         "generate"),
         ["final.pt: not an augment-gan/1 file", "point at the final.pt that train-gan wrote"]),
    # stale inputs of a stage run alone: refused with what to rerun, never used silently
    Case("train-gan on data prepared with other params", setting("train-gan", "data.split_seed=4"),
         ["data/prepared: prepared with data.split_seed = 0, the params now say 4", "run `augment prepare`"]),
    Case("generate with a plan of other params", setting("generate", "plan.sampling_strategy=minority"),
         ["data/plan.json: adds", "plan.sampling_strategy now give", "run `augment plan`"]),
    Case("generate with a final.pt trained for fewer steps", setting("generate", "train_gan.steps=8"),
         ["data/models/gan/final.pt: trained for 4 steps, train_gan.steps now says 8", "run `augment train-gan`"]),
    Case("evaluate after the plan changed (generate not rerun, or killed)",
         after(["plan", "--set", "plan.sampling_strategy={two: 20}"],
               ["evaluate", "--set", "plan.sampling_strategy={two: 20}"]),
         ["data/synthetic: generated for a plan with", "data/plan.json now says", "run `augment generate`"]),
    Case("evaluate with other generate params", setting("evaluate", "generate.seed=5"),
         ["data/synthetic: generated with generate.seed = 0, the params now say 5", "run `augment generate`"]),
    Case("evaluate after the GAN was retrained", with_file("data/models/gan/final.pt", edit_checkpoint(note="x"),
                                                           "evaluate"),
         ["data/synthetic: generated by another data/models/gan/final.pt", "run `augment generate`"]),
    Case("plan.json with a negative quota", with_file("data/plan.json", '{"zero": -3, "one": 4, "two": 6}', "generate"),
         ["plan['zero'] = -3: quotas must be integers >= 0"]),
    Case("plan.json naming an unknown class", with_file("data/plan.json", '{"nine": 4}', "generate"),
         ["plan class(es) ['nine'] are not among the generator's classes", "rerun `augment plan`"]),
    Case("plan.json not JSON", with_file("data/plan.json", '{"zero": ', "generate"),
         ["data/plan.json: not valid JSON", "run `augment plan` again"]),
    # the synthetic dataset, read by evaluate
    Case("shard with a wrong schema", with_file(SHARD1, shard_with_other_columns, "evaluate"),
         [f"{SHARD1}: missing column(s) image, label", "expected the Hugging Face image layout"]),
    Case("shard that does not match the manifest's sha256", with_file(SHARD1, flip_a_byte, "evaluate"),
         [f"{SHARD1}: sha256 does not match", "rerun `augment generate`"]),
    Case("shard listed but missing", with_file(SHARD1, Path.unlink, "evaluate"),
         [f"{SHARD1}: listed in data/synthetic/manifest.json but missing", "rerun `augment generate`"]),
    Case("manifest not JSON", with_file("data/synthetic/manifest.json", "{", "evaluate"),
         ["data/synthetic/manifest.json: not valid JSON", "rerun `augment generate`"]),
    Case("shards without their manifest", with_file("data/synthetic/manifest.json", remove_manifest, "evaluate"),
         ["data/synthetic: has shards but no manifest.json", "run it again"]),
]


def check_refused(root: Path, setup: Callable[[Path], list[str]], run: Callable[[Path, list[str]], tuple[int, str]],
                  says: list[str], code: int) -> str:
    """Set the case up, snapshot data/, run it; the exit code, the one error line, data/ unchanged."""
    args = setup(root)
    before = snapshot(root)
    got, stderr = run(root, args)
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert got == code and len(errors) == 1 and "Traceback" not in stderr, stderr
    for fragment in says:
        assert fragment in errors[0], f"{fragment!r} not in {errors[0]!r}"
    assert snapshot(root) == before, "earlier outputs changed"
    return errors[0]


def test_the_catalogue_is_long_enough():
    assert len(CASES) >= 30 and len({c.name for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input(project, capsys, case: Case):
    def in_process(root: Path, args: list[str]) -> tuple[int, str]:
        capsys.readouterr()  # what the setup printed
        code = augment(root, *args)
        return code, capsys.readouterr().err

    check_refused(project, case.setup, in_process, case.says, case.code)


SUBPROCESS = ["corrupt image", "checkpoint of another arch"]  # a file, and a key (each process imports torch)


@pytest.mark.slow
@pytest.mark.parametrize("name", SUBPROCESS)
def test_bad_input_as_a_real_process(project, name):
    case = next(c for c in CASES if c.name == name)

    def real(root: Path, args: list[str]) -> tuple[int, str]:
        proc = run_cli(*args, "-q", cwd=root)
        return proc.returncode, proc.stderr

    check_refused(project, case.setup, real, case.says, case.code)


@pytest.mark.parametrize("stage", ["prepare", "generate"])
def test_an_output_folder_that_cannot_be_written_is_one_line(project, capsys, monkeypatch, stage):
    """A read-only or permission-denied folder (simulated: the tests may run as root, whom chmod
    does not stop): exit 1, one line naming the path, no traceback, nothing changed."""
    import errno
    import tempfile

    real = tempfile.mkstemp

    def denied(*args, dir=None, **kwargs):
        if dir is not None and "data" in Path(dir).parts:
            raise PermissionError(errno.EACCES, "Permission denied", str(dir))
        return real(*args, dir=dir, **kwargs)

    def setup(root: Path) -> list[str]:
        monkeypatch.setattr(tempfile, "mkstemp", denied)
        return [stage]

    def in_process(root: Path, args: list[str]) -> tuple[int, str]:
        capsys.readouterr()
        return augment(root, *args), capsys.readouterr().err

    line = check_refused(project, setup, in_process, ["cannot write there (Permission denied)",
                                                      "make the folder writable"], code=1)
    assert "error: data/" in line


# ---- inputs that must work -----------------------------------------------------------------------------

def _ema(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)["g_ema"]


def test_lowering_steps_resumes_from_an_earlier_checkpoint_as_a_fresh_run_would(project, tmp_path, capsys):
    """steps 4 -> 3 (checkpoints at 2 and 4): resumes from step 2, and final.pt equals a fresh 3-step run's."""
    assert augment(project, "train-gan", "--set", "train_gan.steps=3") == 0, capsys.readouterr().err
    final = project / "data/models/gan/final.pt"
    assert torch.load(final, map_location="cpu", weights_only=True)["step"] == 3
    fresh = tmp_path / "fresh"
    shutil.copytree(project, fresh)
    shutil.rmtree(fresh / "data/models")
    assert augment(fresh, "train-gan", "--set", "train_gan.steps=3") == 0
    mine, theirs = _ema(final), _ema(fresh / "data/models/gan/final.pt")
    assert all(torch.equal(mine[k], theirs[k]) for k in mine)
    assert (project / "data/models/gan/checkpoint-4.pt").is_file()  # kept for a longer run
    assert augment(project, "generate", "--set", "train_gan.steps=3") == 0


def test_changing_gan_params_starts_a_new_run_and_changing_back_resumes(project, capsys):
    gan = project / "data/models/gan"
    before = torch.load(gan / "final.pt", map_location="cpu", weights_only=True)["fingerprint"]
    assert augment(project, "train-gan", "--set", "train_gan.lr_d=0.001") == 0, capsys.readouterr().err
    aside = gan / "previous" / before[:12]
    assert sorted(p.name for p in aside.iterdir()) == ["checkpoint-2.pt", "checkpoint-4.pt"]
    other = torch.load(gan / "final.pt", map_location="cpu", weights_only=True)["fingerprint"]
    assert other != before
    assert augment(project, "train-gan") == 0, capsys.readouterr().err  # back: resumes at step 4
    assert not aside.exists() and (gan / "previous" / other[:12] / "checkpoint-4.pt").is_file()
    assert torch.load(gan / "final.pt", map_location="cpu", weights_only=True)["fingerprint"] == before
    assert augment(project, "run", "--set", "evaluate.strategies=[none]") == 0, capsys.readouterr().err


def test_other_sizes_and_modes_are_converted_when_configured(tmp_path, capsys):
    image_folder(tmp_path, {"a/big.png": png(12), "a/rgb.png": png(mode="RGB")})
    assert augment(tmp_path, *prepare("imgs", "--set", "data.image_size=8", "--set", "data.channels=1",
                                      "--set", "data.long_tail.profile=none")) == 0, capsys.readouterr().err
    counts = json.loads((tmp_path / "data/prepared/class_counts.json").read_text())
    assert counts["image_shape"] == [8, 8, 1]
    assert sum(counts["counts"]["train"].values()) + sum(counts["counts"]["val"].values()) \
        + sum(counts["counts"]["test"].values()) == 8


@pytest.mark.slow
def test_a_class_with_one_image_and_awkward_names_go_end_to_end(tmp_path, capsys):
    """One image of class '..' (GAN, SMOTE and the plan handle it); names that collide once made
    safe ('a/b', 'a_b'), '..' and non-ASCII get distinct folders inside the export."""
    names = ["a/b", "a_b", "é猫", ".."]
    write_npz(tmp_path / "src", counts=(12, 8, 6, 1), names=names)
    (tmp_path / "params.yaml").write_text(PARAMS.replace("generate: {shard_size: 5}",
                                                          "generate: {shard_size: 5, export_images: true}"))
    strategies = "evaluate.strategies=[none, class_weight, oversample, smote, augment, gan, gan+augment]"
    for args in (["prepare"], ["plan"], ["train-gan"], ["generate"], ["evaluate", "--set", strategies]):
        assert augment(tmp_path, *args) == 0, (args, capsys.readouterr().err)
    counts = json.loads((tmp_path / "data/prepared/class_counts.json").read_text())["counts"]
    assert counts["train"][".."] == 1 and counts["val"][".."] == 0
    plan = json.loads((tmp_path / "data/plan.json").read_text())
    assert plan[".."] == counts["train"]["a/b"] - 1
    manifest = json.loads((tmp_path / "data/synthetic/manifest.json").read_text())
    assert manifest["counts"][".."] == plan[".."]
    # generate.precision auto, resolved as on this machine, is recorded in the manifest and the card
    from pipeline.device import choose_precision
    resolved = "bf16" if choose_precision("auto", torch.device("cpu")) is not None else "fp32"
    assert manifest["precision"] == resolved
    assert f", run in {resolved}." in (tmp_path / "data/synthetic/README.md").read_text()
    dirs = manifest["images"]["class_dirs"]
    # every class has its folder, 'a/b' (no image to add) too: ImageFolder's indices are the labels
    assert dirs == {"a/b": "0-a_b", "a_b": "1-a_b", "é猫": "2-é猫", "..": "3-__"}
    export = tmp_path / "data/synthetic/images"
    assert {p.name for p in export.iterdir()} == set(dirs.values())
    assert [p.name for p in (export / "0-a_b").iterdir()] == [".keep"]
    assert all(p.resolve().is_relative_to(export.resolve()) for p in export.rglob("*"))
    metrics = json.loads((tmp_path / "data/reports/metrics.json").read_text())
    assert set(metrics["strategies"]) >= {"none", "smote", "gan", "oversample"}
    assert metrics["class_names"] == names
