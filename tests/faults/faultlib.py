"""Fault injection for `augment`: real CLI processes killed with SIGKILL, or starved of disk, at
chosen points (`AUGMENT_FAULT`, see HOOK); an uninterrupted run of the same tiny params is the
reference that every rerun must equal. Imported by the tests/faults modules.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

# Every stage on digits in seconds: 10 GAN steps (checkpoints at 4 and 8), several shards plus the
# ImageFolder export, two evaluation strategies.
TINY_PARAMS = """\
paths: {prepared: data/prepared, plan: data/plan.json, gan: data/models/gan, synthetic: data/synthetic,
        reports: data/reports}
data:
  source: digits
  long_tail: {profile: exponential, ratio: 5}
plan: {sampling_strategy: auto}
train_gan: {steps: 10, batch_size: 16, checkpoint_every: 4, sample_every: 5, ema_warmup: 2, device: cpu}
generate: {batch_size: 64, shard_size: 100, export_images: true}
evaluate: {strategies: [none, gan], seeds: 1, epochs: 1, gan_quality: false, device: cpu}
"""

# Which stage writes what (paths relative to the project folder).
OUTPUTS = {
    "prepare": ["data/prepared"],
    "plan": ["data/plan.json"],
    "train_gan": ["data/models/gan"],
    "generate": ["data/synthetic"],
    "evaluate": ["data/reports/metrics.json", "data/reports/predictions.parquet"],
}
ORDER = list(OUTPUTS)

# A helper module rather than a conftest.py: pytest imports every conftest.py outside a package as
# module `conftest`, so a second one here would shadow tests/conftest.py for `from conftest import`.

# `python -c HOOK ARGS` is `augment ARGS` with AUGMENT_FAULT=<mode>:<pattern>:<n> installed first:
# torn: the n-th rename onto a file name matching the glob finds its temporary half written, then
#   SIGKILL; after: SIGKILL right after that rename; enospc: that write fails, no space left;
# call: SIGKILL on the n-th call of the function <pattern> = module.attr.
HOOK = r'''
import errno, fnmatch, importlib, os, signal, sys
from pathlib import Path

def install(spec):
    mode, rest = spec.split(":", 1)
    pattern, nth = rest.rsplit(":", 1)
    nth, seen = int(nth), [0]

    def due():
        seen[0] += 1
        return seen[0] == nth

    if mode == "call":
        module, attr = pattern.rsplit(".", 1)
        mod = importlib.import_module(module)
        real_fn = getattr(mod, attr)

        def wrapper(*args, **kwargs):
            if due():
                os.kill(os.getpid(), signal.SIGKILL)
            return real_fn(*args, **kwargs)

        setattr(mod, attr, wrapper)
        return
    real_replace = os.replace

    def replace(src, dst, *args, **kwargs):
        if not (fnmatch.fnmatchcase(Path(dst).name, pattern) and due()):
            return real_replace(src, dst, *args, **kwargs)
        if mode in ("torn", "enospc"):
            os.truncate(src, os.path.getsize(src) // 2)  # the write got half way
            if mode == "torn":
                os.kill(os.getpid(), signal.SIGKILL)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_replace(src, dst, *args, **kwargs)
        os.kill(os.getpid(), signal.SIGKILL)

    os.replace = replace

if os.environ.get("AUGMENT_FAULT"):
    install(os.environ["AUGMENT_FAULT"])
from pipeline.cli import main
sys.argv[0] = "augment"
sys.exit(main(sys.argv[1:]))
'''


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def is_temporary(path: Path, root: Path) -> bool:
    return any(part.startswith(".tmp-") for part in path.relative_to(root).parts)


class Project:
    """One project folder: params.yaml + data/, and `augment` subprocesses run in it."""

    def __init__(self, root: Path):
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        (root / "params.yaml").write_text(TINY_PARAMS)

    def command(self, *args: str) -> list[str]:
        return [sys.executable, "-c", HOOK, *args]

    def env(self, fault: str | None = None) -> dict:
        env = dict(os.environ, PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1")
        env.pop("AUGMENT_FAULT", None)
        if fault:
            env["AUGMENT_FAULT"] = fault
        return env

    def run(self, *args: str, fault: str | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
        """`augment ARGS` here (add "-q" to hide progress), with `fault` installed; the finished process."""
        return subprocess.run(self.command(*args), cwd=self.root, env=self.env(fault), capture_output=True,
                              text=True, timeout=timeout)

    def ok(self, *args: str) -> subprocess.CompletedProcess:
        proc = self.run(*args)
        assert proc.returncode == 0, f"augment {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}"
        return proc

    def killed(self, *args: str, fault: str) -> subprocess.CompletedProcess:
        """Run with a kill fault and check that the process really died of SIGKILL there."""
        proc = self.run(*args, fault=fault)
        assert proc.returncode == -signal.SIGKILL, (
            f"augment {' '.join(args)} with {fault} was not killed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
        return proc

    def popen(self, *args: str, log: Path) -> subprocess.Popen:
        """`augment ARGS` started in the background, stdout and stderr to `log`."""
        with open(log, "w") as out:
            return subprocess.Popen(self.command(*args), cwd=self.root, env=self.env(), stdout=out,
                                    stderr=subprocess.STDOUT, text=True)

    def files(self, under: str = "data") -> dict[str, str]:
        """{relative path: sha256} of every file under `under`, temporaries and the lock included."""
        base = self.root / under
        return {str(p.relative_to(self.root)): sha256(p) for p in sorted(base.rglob("*")) if p.is_file()}

    def visible(self) -> dict[str, str]:
        """{relative path: sha256} of the files readers and DVC look at: no temporaries, no lock."""
        data = self.root / "data"
        return {k: v for k, v in self.files().items()
                if not is_temporary(self.root / k, data) and not k.endswith(".augment.lock")}

    def copy_outputs(self, source: "Project", stages: list[str]) -> None:
        for stage in stages:
            for rel in OUTPUTS[stage]:
                src, dst = source.root / rel, self.root / rel
                dst.parent.mkdir(parents=True, exist_ok=True)
                (shutil.copytree if src.is_dir() else shutil.copy2)(src, dst)


def outcome(root: Path) -> dict:
    """What an uninterrupted run and an interrupted-then-rerun one must share: the sha256 of the
    prepared splits, plan, final GAN, every synthetic file and the predictions, and metrics.json
    minus how the run went (its timings and how many finished runs a resumed evaluate read)."""
    out = {}
    for rel in ("data/prepared", "data/plan.json", "data/models/gan/final.pt", "data/synthetic",
                "data/reports/predictions.parquet"):
        path = root / rel
        files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        for p in files:
            out[str(p.relative_to(root))] = sha256(p)
    metrics_path = root / "data/reports/metrics.json"
    if metrics_path.is_file():
        metrics = json.loads(metrics_path.read_text())
        metrics.pop("timing_s", None)
        metrics.pop("reused_runs", None)
        out["metrics.json minus timing_s and reused_runs"] = metrics
    return out


def assert_whole(root: Path) -> None:
    """No file that looks complete is half-written: every non-temporary output parses in full, and
    a synthetic folder with a manifest matches it (shards listed == shards present, sha256 equal)."""
    import pyarrow.parquet as pq
    import torch
    from PIL import Image

    from pipeline import loaders, reader

    data = root / "data"
    for p in sorted(data.rglob("*")):
        if not p.is_file() or is_temporary(p, data) or p.name == ".augment.lock":
            continue
        if p.suffix == ".parquet":
            pq.read_table(p)
        elif p.suffix == ".json":
            json.loads(p.read_text())
        elif p.suffix == ".pt":
            assert isinstance(torch.load(p, map_location="cpu", weights_only=True), dict), p
        elif p.suffix in (".png", ".gif"):
            with Image.open(p) as im:
                im.load()
        elif p.name == ".keep":  # the empty marker that keeps an empty class folder (ImageFolder labels)
            assert p.parent.parent.name == "images", p
        else:
            assert p.stat().st_size > 0, p
    syn = data / "synthetic"
    if (syn / "manifest.json").is_file():
        manifest = reader.read_manifest(syn)
        present = {f"data/{p.name}" for p in syn.glob("data/train-*.parquet")}
        assert present == {f["path"] for f in manifest["files"]}, (present, manifest["files"])
        loaders.load_arrow(syn, verify=True)


def wait_for(predicate, proc: subprocess.Popen, timeout: float, what: str, log: Path) -> None:
    """Poll `predicate` every 20 ms until true; fail if `proc` ends first or time runs out."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc.poll() is not None:
            raise AssertionError(f"{what}: the process ended first ({proc.returncode}):\n{log.read_text()[-3000:]}")
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s")
        time.sleep(0.02)


_REFERENCE: list[Project] = []


def reference() -> Project:
    """An uninterrupted `augment run` of TINY_PARAMS, made once per test session (in a temporary
    folder removed at exit): what every interrupted run must end equal to."""
    if not _REFERENCE:
        folder = Path(tempfile.mkdtemp(prefix="augment-faults-"))
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
        project = Project(folder / "reference")
        project.ok("run")
        assert_whole(project.root)
        _REFERENCE.append(project)
    return _REFERENCE[0]
