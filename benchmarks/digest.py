"""Byte-for-byte digest of a small `augment run`: the sha256 of every output file.

Run before and after a refactor that must not change behaviour; the two digests must match
(files whose content records wall time or absolute paths are listed as `volatile` and skipped).

    python benchmarks/digest.py --out /tmp/digest-before.json
    python benchmarks/digest.py --out /tmp/digest-after.json --compare /tmp/digest-before.json

benchmarks/digests/<version>.json: each release's digest (0.5.0 against 0.4.0: CHANGELOG.md says
which files differ and why).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# a small run that still touches every stage: a short GAN, every strategy family, two seeds
SETTINGS = [
    "train_gan.steps=60", "train_gan.checkpoint_every=30", "train_gan.sample_every=30",
    "train_gan.track_quality=true", "train_gan.judge_epochs=1",
    "generate.pool_factor=2", "generate.export_images=true",
    "evaluate.seeds=2", "evaluate.epochs=2", "evaluate.workers=1",
    "evaluate.strategies=[none,oversample,logit_adjust,drw,decouple,mixup_drw,gan,gan_la,gan_drw,gan_crt,gan_policy]",
    "evaluate.mix.cap_ratio=[0,null]", "evaluate.mix.min_score=[0.0]", "evaluate.mix.synthetic_weight=[1.0]",
    "evaluate.mix.class_weight=[false]",
]
# content that records time, hosts or absolute paths
VOLATILE_NAMES = {"report.html", "report.md", "summary.json", "metrics.json", "manifest.json", "README.md",
                  "meta.json", "timing.json", "log.txt", ".lock"}


def run(workdir: Path) -> None:
    env = dict(os.environ, OMP_NUM_THREADS="1", DVC_NO_ANALYTICS="1")
    sets = [a for s in SETTINGS for a in ("--set", s)]
    subprocess.run([str(Path(sys.executable).parent / "augment"), "run", "-q", "--params",
                    str(ROOT / "params.yaml"), *sets], cwd=workdir, env=env, check=True)


def _strip(obj):
    """JSON with time- and host-dependent fields removed, so the rest can be compared."""
    if isinstance(obj, dict):
        return {k: _strip(v) for k, v in obj.items()
                if not any(t in k for t in ("time", "wall", "seconds", "created", "host", "cpu", "duration",
                                             "elapsed", "timing", "path", "it_s", "per_s", "version"))}
    if isinstance(obj, list):
        return [_strip(v) for v in obj]
    return obj


def _feed(h, obj) -> None:
    if isinstance(obj, dict):
        for k in sorted(obj, key=str):
            h.update(str(k).encode())
            _feed(h, obj[k])
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            _feed(h, v)
    elif hasattr(obj, "numpy"):
        h.update(obj.detach().cpu().contiguous().view(-1).view(__import__("torch").uint8).numpy().tobytes())
    else:
        h.update(repr(obj).encode())


def digest(workdir: Path) -> dict[str, str]:
    out = {}
    for f in sorted((workdir / "data").rglob("*")):
        if not f.is_file():
            continue
        rel = str(f.relative_to(workdir))
        if f.suffix == ".json":
            try:
                body = json.dumps(_strip(json.loads(f.read_text())), sort_keys=True).encode()
                out[rel] = "json:" + hashlib.sha256(body).hexdigest()[:16]
                continue
            except ValueError:
                pass
        if f.suffix == ".pt":  # weights and optimiser state; the global RNG state recorded for resume is unseeded
            import torch
            state = torch.load(f, map_location="cpu", weights_only=False)
            state.pop("rng", None)
            h = hashlib.sha256()
            _feed(h, state)
            out[rel] = "pt:" + h.hexdigest()[:16]
            continue
        if f.name in VOLATILE_NAMES or f.suffix in {".html", ".md", ".log"}:
            out[rel] = "volatile"
            continue
        out[rel] = hashlib.sha256(f.read_bytes()).hexdigest()[:16]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--compare", default=None, help="an earlier digest: report every file that differs")
    ap.add_argument("--keep", default=None, help="run in this folder (kept) instead of a temporary one")
    a = ap.parse_args()
    if a.keep:
        wd = Path(a.keep)
        wd.mkdir(parents=True, exist_ok=True)
        run(wd)
        d = digest(wd)
    else:
        with tempfile.TemporaryDirectory() as t:
            run(Path(t))
            d = digest(Path(t))
    Path(a.out).write_text(json.dumps(d, indent=1, sort_keys=True))
    print(f"{len(d)} files -> {a.out}")
    if a.compare:
        before = json.loads(Path(a.compare).read_text())
        diff = sorted(k for k in set(before) | set(d) if before.get(k) != d.get(k))
        for k in diff:
            print(f"DIFFERS {k}: {before.get(k)} -> {d.get(k)}")
        print("identical" if not diff else f"{len(diff)} files differ")
        sys.exit(1 if diff else 0)


if __name__ == "__main__":
    main()
