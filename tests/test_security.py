"""Security: files from elsewhere (checkpoints, npz, manifests, class names) run no code and write
nothing outside the output folder; the package has no pickle/eval/unsafe YAML on user data; the
Prefect server in the tests and docs listens on 127.0.0.1 only.
"""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import REPO, run_cli, tiny_arrays
from pipeline import gan_checkpoints, loaders, release
from pipeline.data import ImageTable
from pipeline.errors import DataError

SOURCES = sorted([*(REPO / "pipeline").rglob("*.py"), *(REPO / "flows").rglob("*.py")])


class Marker:
    """Unpickling this creates `path`: what a malicious checkpoint would do, harmlessly."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def malicious_checkpoint(path: Path, marker: Path, **fields) -> Path:
    """A .pt that looks like an augment file but creates `marker` when fully unpickled."""
    torch.save({"format": gan_checkpoints.FORMAT} | fields | {"payload": Marker(marker)}, path)
    return path


def test_the_malicious_checkpoint_would_run_code_without_weights_only(tmp_path):
    """The payload is live: a plain torch.load (in a child process) creates the marker."""
    marker = tmp_path / "pwned"
    pt = malicious_checkpoint(tmp_path / "evil.pt", marker)
    subprocess.run([sys.executable, "-c", f"import torch; torch.load({str(pt)!r}, weights_only=False)"], check=True)
    assert marker.exists()


def test_generate_refuses_a_malicious_checkpoint_and_runs_none_of_it(tmp_path):
    marker = tmp_path / "pwned"
    (tmp_path / "data/models/gan").mkdir(parents=True)
    (tmp_path / "data/plan.json").write_text('{"0": 1}')
    malicious_checkpoint(tmp_path / "data/models/gan/final.pt", marker)
    proc = run_cli("generate", "-q", cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert "data/models/gan/final.pt: cannot be read as a GAN checkpoint (UnpicklingError); retrain it" in proc.stderr
    assert not marker.exists()


def test_training_treats_malicious_checkpoints_as_unreadable(tmp_path):
    marker = tmp_path / "pwned"
    out = tmp_path / "gan"
    out.mkdir()
    malicious_checkpoint(gan_checkpoints.checkpoint_path(out, 5), marker, format=gan_checkpoints.CHECKPOINT_FORMAT)
    malicious_checkpoint(out / "final.pt", marker, fingerprint="f", step=5)
    assert gan_checkpoints.read_checkpoint(out, "f", 10) is None  # skipped, as a corrupt file would be
    assert not gan_checkpoints.finished(out / "final.pt", "f", 5)  # retrained, never trusted
    with pytest.raises(DataError, match="cannot be read as a GAN checkpoint"):
        gan_checkpoints.load_generator(out / "final.pt")
    assert not marker.exists()


def test_prepare_refuses_pickled_objects_in_an_npz(tmp_path):
    marker = tmp_path / "pwned"
    src = tmp_path / "src"
    src.mkdir()
    x, y = tiny_arrays((4, 4))
    np.savez(src / "train.npz", x=np.array([Marker(marker)] * len(y), dtype=object), y=y)
    proc = run_cli("prepare", "-q", "--set", "data.source=src", cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert "src/train.npz: cannot read npz" in proc.stderr and "allow_pickle=False" in proc.stderr
    assert not marker.exists()


# ---- the package's own code ---------------------------------------------------------------------

def _dotted(node: ast.AST) -> str:
    """`a.b.c` for a Name/Attribute chain, else ''."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        inner = _dotted(node.value)
        return f"{inner}.{node.attr}" if inner else ""
    return ""


def _kw(call: ast.Call, name: str):
    for k in call.keywords:
        if k.arg == name:
            return k.value.value if isinstance(k.value, ast.Constant) else "<expr>"
    return None


UNSAFE_IMPORTS = {"pickle", "cPickle", "dill", "shelve", "marshal", "joblib", "cloudpickle"}
UNSAFE_CALLS = {"eval", "exec", "yaml.load", "yaml.unsafe_load", "yaml.full_load", "yaml.load_all",
                "pd.read_pickle", "pandas.read_pickle", "os.system", "os.popen", "torch.jit.load"}


def _ruamel_names(tree: ast.AST) -> set[str]:
    """Names bound to `ruamel.yaml.YAML()` objects of a safe kind (round-trip or safe): their
    `.load` builds plain data only."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call) and \
                _dotted(node.value.func).split(".")[-1] == "YAML" and _kw(node.value, "typ") in (None, "rt", "safe"):
            names |= {t.id for t in node.targets if isinstance(t, ast.Name)}
    return names


def unsafe_uses(source: str, name: str = "<src>") -> list[str]:
    """Places in `source` that could run code from a file or a string: pickle-like imports, eval/exec,
    non-safe YAML, torch.load without weights_only=True, np.load with allow_pickle, shell=True."""
    found = []
    tree = ast.parse(source)
    safe_yaml = _ruamel_names(tree)
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            mods = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            found += [f"{name}:{node.lineno} import {m}" for m in mods if m.split(".")[0] in UNSAFE_IMPORTS]
        if not isinstance(node, ast.Call):
            continue
        fn = _dotted(node.func)
        where = f"{name}:{node.lineno} {fn}"
        if fn == "yaml.load" and "yaml" in safe_yaml:
            continue
        if fn in UNSAFE_CALLS:
            found.append(where)
        elif fn == "torch.load" and _kw(node, "weights_only") is not True:
            found.append(f"{where} without weights_only=True")
        elif fn in ("np.load", "numpy.load") and _kw(node, "allow_pickle") not in (None, False):
            found.append(f"{where} with allow_pickle")
        elif _kw(node, "shell") not in (None, False):
            found.append(f"{where} with shell=True")
    return found


def test_the_checker_finds_what_it_looks_for():
    bad = ("import pickle\nimport yaml, torch, numpy as np, subprocess\neval('1')\nyaml.load(s)\n"
           "torch.load(p)\ntorch.load(p, weights_only=False)\nnp.load(p, allow_pickle=True)\n"
           "subprocess.run(c, shell=True)\n")
    assert len(unsafe_uses(bad)) == 7
    good = "import yaml, torch\nyaml.safe_load(s)\ntorch.load(p, weights_only=True)\nmodel.eval()\n"
    assert unsafe_uses(good) == []
    assert unsafe_uses("yaml = YAML()\nyaml.load(s)\n") == []  # ruamel's round-trip loader: plain data
    assert len(unsafe_uses("yaml = YAML(typ='unsafe')\nyaml.load(s)\n")) == 1


def test_the_package_has_no_pickle_eval_or_unsafe_loading():
    found = [u for path in SOURCES for u in unsafe_uses(path.read_text(encoding="utf-8"), str(path.relative_to(REPO)))]
    assert found == []


def test_every_torch_load_in_the_package_is_weights_only():
    loads = [path for path in SOURCES for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
             if isinstance(node, ast.Call) and _dotted(node.func) == "torch.load"]
    assert len(loads) >= 3  # gan_checkpoints.py: resume, finished-check, load_generator (all checked above)


# ---- file names from class names and manifests ---------------------------------------------------

HOSTILE = ["../../escape", "/etc/passwd", "..", ".", "a/../../b", "..\\..\\win", "C:\\x", "nul", ".hidden",
           "x\x00y", "é/../猫", "~", "$HOME", "a" * 300]


def test_exported_file_names_cannot_leave_the_output_folder(tmp_path):
    x, _ = tiny_arrays((len(HOSTILE),))
    labels = np.arange(len(HOSTILE))
    out = tmp_path / "inside" / "syn"
    manifest = release.write_shards(out, ImageTable(x[: len(HOSTILE)], labels, HOSTILE), {"source": "synthetic"}, 4,
                                    {}, export_images=True)
    every = [p for p in tmp_path.rglob("*")]
    assert all(p.resolve().is_relative_to(out.resolve()) or p == out.parent for p in every), every
    dirs = manifest["images"]["class_dirs"]
    assert len(set(dirs.values())) == len(HOSTILE)
    for d in dirs.values():
        assert Path(d).name == d and d not in (".", "..") and not d.startswith(".") and "\x00" not in d
    assert sorted(p.name for p in (out / "images").iterdir()) == sorted(dirs.values())
    assert len(list((out / "images").rglob("*.png"))) == len(HOSTILE)


@pytest.mark.parametrize("path", ["../outside.parquet", "/etc/passwd", "a/../../outside.parquet", ""])
def test_a_manifest_cannot_point_outside_its_folder(tmp_path, path):
    x, y = tiny_arrays((2, 2))
    folder = tmp_path / "syn"
    release.write_shards(folder, ImageTable(x, y, ["a", "b"]), {"source": "synthetic"}, 10, {})
    (tmp_path / "outside.parquet").write_bytes((folder / "data" / "train-00000-of-00001.parquet").read_bytes())
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["files"][0]["path"] = path
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DataError, match="is not a path inside"):
        loaders.load_arrow(folder)


# ---- the Prefect server --------------------------------------------------------------------------

# a command line or argument list that starts a server (not prose naming the command in backticks)
SERVER_START = re.compile(r"""prefect["')]*[\s,]+["']?server["']?[\s,]+["']?start\b(?!`)""")


def test_the_prefect_server_listens_on_localhost_in_tests_and_docs():
    texts = {p: p.read_text(encoding="utf-8") for p in [REPO / "Makefile", REPO / "README.md", REPO / "prefect.yaml",
                                                         *(REPO / "tests").rglob("*.py"), *(REPO / ".ci").rglob("*"),
                                                         *(REPO / "flows").glob("*.py")] if p.is_file()}
    starts = 0
    for path, text in texts.items():
        if path.name == Path(__file__).name:
            continue
        for line in text.splitlines():
            assert "0.0.0.0" not in line, f"{path}: {line}"
            if SERVER_START.search(line):
                starts += 1
                assert "127.0.0.1" in line, f"{path}: a Prefect server that may listen beyond localhost: {line}"
    assert starts >= 2  # the Makefile's `make server` and the tests' server fixture
    # the temporary servers that flow runs without PREFECT_API_URL start (tests/faults) use this
    from prefect.settings import get_current_settings

    assert get_current_settings().server.api.host in ("127.0.0.1", "localhost")
