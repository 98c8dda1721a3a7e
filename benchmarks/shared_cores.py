"""Shared cores: `augment train-gan` speed alone and beside one busy single-threaded neighbour.

Each case trains the same GAN (MNIST-LT, the auto recipe) for --steps steps in a fresh process and
reads the images/s the trainer logs (startup excluded). A case is a thread setting x an OpenMP wait
policy:

  0.4.0     torch's default threads (all cores), libgomp's default spinning (GOMP_SPINCOUNT=300000)
  passive   torch's default threads, OMP_WAIT_POLICY=PASSIVE
  auto      train_gan.cpu_threads=auto (the cores free at the start) + PASSIVE
  auto-spin cpu_threads=auto with spinning

and each runs alone, then with `python -c "while True: pass"` beside it, started a second before.
The figure of merit is a case's speed beside the neighbour as a share of the fastest alone speed.

    python benchmarks/shared_cores.py --data ../shared/datasets/mnist --out benchmarks/results/shared_cores.json
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

from machine import code_version, machine_info  # noqa: E402

sys.path.insert(0, str(REPO))
from pipeline.cores import free_cores  # noqa: E402

CASES = {
    "0.4.0": ({"GOMP_SPINCOUNT": "300000"}, "null"),
    "passive": ({"OMP_WAIT_POLICY": "PASSIVE"}, "null"),
    "auto": ({"OMP_WAIT_POLICY": "PASSIVE"}, "auto"),
    "auto-spin": ({"GOMP_SPINCOUNT": "300000"}, "auto"),
}
RATE = re.compile(r"at (\d+) images/s")


def _augment(workdir: Path, stage: str, sets: list[str], env: dict) -> str:
    cmd = [str(Path(sys.executable).parent / "augment"), stage, "--params", str(REPO / "params.yaml")]
    for s in sets:
        cmd += ["--set", s]
    out = subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"{stage} failed:\n{out.stderr[-2000:]}")
    return out.stderr


def _env(extra: dict) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OMP_NUM_THREADS")}
    return {**env, **extra, "DVC_NO_ANALYTICS": "1"}


def run_case(workdir: Path, base: list[str], name: str, steps: int, neighbour: bool) -> dict:
    extra, threads = CASES[name]
    shutil.rmtree(workdir / "data" / "models", ignore_errors=True)
    sets = base + [f"train_gan.steps={steps}", f"train_gan.cpu_threads={threads}",
                   f"train_gan.checkpoint_every={steps}", f"train_gan.sample_every={steps}"]
    idle = round(free_cores(1.0), 2)  # what else was running: recorded with the row
    spin = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if neighbour else None
    try:
        if spin:
            time.sleep(1.0)
        t0 = time.perf_counter()
        log = _augment(workdir, "train-gan", sets, _env(extra))
        wall = time.perf_counter() - t0
    finally:
        if spin:
            spin.kill()
            spin.wait()
    rate = RATE.findall(log)
    chosen = re.findall(r"on (\d+) CPU thread", log)
    return {"case": name, "neighbour": neighbour, "images_per_s": int(rate[-1]) if rate else None,
            "threads": int(chosen[-1]) if chosen else "torch default", "wall_s": round(wall, 1),
            "cores_idle_before": idle}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="../shared/datasets/mnist")
    ap.add_argument("--steps", type=int, default=120)
    ap.add_argument("--workdir", default="benchmarks/work/shared_cores")
    ap.add_argument("--out", default="benchmarks/results/shared_cores.json")
    ap.add_argument("--cases", nargs="+", default=list(CASES))
    a = ap.parse_args()
    wd = Path(a.workdir).resolve()
    wd.mkdir(parents=True, exist_ok=True)
    base = [f"data.source={Path(a.data).resolve()}", "data.long_tail.profile=deepsmote"]
    _augment(wd, "prepare", base, _env({}))
    rows = []
    for neighbour in (False, True):
        for name in a.cases:
            rows.append(run_case(wd, base, name, a.steps, neighbour))
            print(json.dumps(rows[-1]), flush=True)
    alone = max(r["images_per_s"] for r in rows if not r["neighbour"])
    for r in rows:
        r["share_of_best_alone"] = round(r["images_per_s"] / alone, 3)
    cmd = f"python benchmarks/shared_cores.py --data {a.data} --steps {a.steps}"
    result = {"command": cmd, "machine": machine_info(), "code": code_version(), "steps": a.steps, "rows": rows,
              "best_alone_images_per_s": alone}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(a.out).with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=1))
    tmp.replace(a.out)
    print(f"-> {a.out}")


if __name__ == "__main__":
    main()
