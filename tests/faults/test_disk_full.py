"""A full disk while a stage writes: one clear line (exit 1), earlier outputs as they were, no
temporary left taking space, and the stage completes once there is room. The full disk is injected
(one write raises ENOSPC half way) and, where a small tmpfs can be mounted privately, real."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from faultlib import HOOK, Project, assert_whole, outcome, reference

pytestmark = pytest.mark.slow

FULL = "no space left on the device while writing"


def disk_full(proc: subprocess.CompletedProcess, where: str) -> None:
    """Exit 1 with exactly one `error:` line naming `where`, saying the disk is full, no traceback."""
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode == 1 and len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert errors[0].startswith(f"error: {where}: {FULL}") and "free some space and rerun" in errors[0], errors[0]


def no_temporaries(folder) -> None:
    assert not [p for p in folder.rglob("*") if p.name.startswith(".tmp-")], list(folder.rglob(".tmp-*"))


def test_prepare_on_a_full_disk_keeps_the_earlier_splits(tmp_path):
    p = Project(tmp_path / "p")
    p.ok("prepare", "-q", "--set", "data.long_tail.ratio=3")
    before = p.visible()
    proc = p.run("prepare", "-q", fault="enospc:.tmp-test.parquet.*:1")  # the third of four files
    disk_full(proc, "data/prepared")
    assert "train.parquet, val.parquet, test.parquet, class_counts.json" in proc.stderr
    assert p.visible() == before  # not even train.parquet, written before the failure, replaced them
    no_temporaries(p.root / "data/prepared")


def test_train_gan_on_a_full_disk_keeps_its_checkpoints_and_resumes(tmp_path):
    p = Project(tmp_path / "p")
    p.copy_outputs(reference(), ["prepare", "plan"])
    disk_full(p.run("train-gan", "-q", fault="enospc:checkpoint-8.pt:1"), "data/models/gan/checkpoint-8.pt")
    assert_whole(p.root)
    gan = p.root / "data/models/gan"
    assert {f.name for f in gan.glob("*.pt")} == {"checkpoint-4.pt"}
    no_temporaries(gan)
    assert "resuming from checkpoint-4.pt" in p.ok("train-gan").stderr  # room again: it goes on
    assert outcome(p.root)["data/models/gan/final.pt"] == outcome(reference().root)["data/models/gan/final.pt"]


def test_generate_on_a_full_disk_keeps_the_earlier_dataset(tmp_path):
    p = Project(tmp_path / "p")
    p.copy_outputs(reference(), ["prepare", "plan", "train_gan", "generate"])
    before = p.visible()
    proc = p.run("generate", "-q", "--set", "generate.seed=7", fault="enospc:.tmp-stage-train-00002-*:1")
    disk_full(proc, "data/synthetic")
    assert p.visible() == before
    assert_whole(p.root)  # the earlier dataset still verifies against its manifest
    no_temporaries(p.root / "data/synthetic")  # the staged part of the new one is gone


def test_evaluate_on_a_full_disk_keeps_the_earlier_results(tmp_path):
    p = Project(tmp_path / "p")
    p.copy_outputs(reference(), ["prepare", "plan", "train_gan", "generate", "evaluate"])
    before = p.visible()
    proc = p.run("evaluate", "-q", "--set", "evaluate.seed=3", fault="enospc:.tmp-metrics.json.*:1")
    disk_full(proc, "data/reports")
    # predictions.parquet, written first, was not switched in alone; the classifier runs that had
    # finished are kept (pipeline.finished_runs), so the rerun after freeing space trains none again
    after = p.visible()
    assert {k: v for k, v in after.items() if k in before} == before
    kept = sorted(k for k in after if k not in before)
    runs = [k for k in kept if k.endswith(".parquet")]
    assert runs and all(k.startswith("data/reports/runs/") and "-seed3-" in k for k in runs), kept
    assert all(k.startswith("data/reports/runs/judge-") for k in kept if k not in runs), kept
    no_temporaries(p.root / "data/reports")


# ---- a real full disk: a small tmpfs in a private mount namespace --------------------------------

def _namespace(tmp_path) -> list[str]:
    """A command prefix whose shell may mount a tmpfs privately (root, or a user namespace); else skip."""
    probe = tmp_path / "probe"
    probe.mkdir()
    for prefix in (["unshare", "-m"], ["unshare", "-Urm"]):
        if shutil.which(prefix[0]) is None:
            break
        proc = subprocess.run([*prefix, "sh", "-c", f"mount -t tmpfs -o size=64k tmpfs '{probe}'"],
                              capture_output=True)
        if proc.returncode == 0:
            return prefix
    pytest.skip("cannot mount a tmpfs here (needs root or unprivileged user namespaces)")


def _in_tmpfs(p: Project, prefix: list[str], mount: str, size_kib: int, script: str) -> None:
    """Run `script` (sh) in p.root with a `size_kib` tmpfs mounted on `mount`; `augment ...` runs the CLI."""
    hook = p.root.parent / "augment_hook.py"
    hook.write_text(HOOK)
    env = dict(p.env(), PY=sys.executable, HOOK=str(hook))
    full = (f"set -e\nmkdir -p {mount}\nmount -t tmpfs -o size={size_kib}k tmpfs {mount}\n"
            f'augment() {{ "$PY" "$HOOK" "$@"; }}\n{script}')
    proc = subprocess.run([*prefix, "sh", "-c", full], cwd=p.root, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_generate_into_a_really_full_tmpfs(tmp_path):
    prefix = _namespace(tmp_path)
    p = Project(tmp_path / "p")
    p.copy_outputs(reference(), ["prepare", "plan", "train_gan"])
    earlier = reference().root / "data/synthetic"
    # room for the earlier dataset (4 KiB pages per file) plus 1 MiB: not for a second copy beside it
    pages = sum(-(-f.stat().st_size // 4096) for f in earlier.rglob("*") if f.is_file())
    _in_tmpfs(p, prefix, "data/synthetic", pages * 4 + 1024, f"""
cp -a {earlier}/. data/synthetic/
(cd data/synthetic && find . -type f | sort | xargs sha256sum) > before.txt
set +e
augment generate -q --set generate.seed=7 2> err.txt
echo $? > rc.txt
(cd data/synthetic && find . -type f | sort | xargs sha256sum) > after.txt
ls -A data/synthetic > listing.txt
""")
    proc = subprocess.CompletedProcess([], int((p.root / "rc.txt").read_text()), "", (p.root / "err.txt").read_text())
    disk_full(proc, "data/synthetic")
    assert (p.root / "after.txt").read_text() == (p.root / "before.txt").read_text()
    assert not [n for n in (p.root / "listing.txt").read_text().split() if n.startswith(".tmp-")]


def test_train_gan_into_a_really_full_tmpfs(tmp_path):
    prefix = _namespace(tmp_path)
    p = Project(tmp_path / "p")
    p.copy_outputs(reference(), ["prepare", "plan"])
    ckpt = (reference().root / "data/models/gan/checkpoint-4.pt").stat().st_size // 1024
    # room for one checkpoint and the small files, not for a second checkpoint beside it
    _in_tmpfs(p, prefix, "data/models/gan", ckpt + 400, """
set +e
augment train-gan -q 2> err.txt
echo $? > rc.txt
ls -A data/models/gan > listing.txt
"$PY" -c "import torch; torch.load('data/models/gan/checkpoint-4.pt', weights_only=True)" > loads.txt 2>&1
echo $? >> loads.txt
""")
    proc = subprocess.CompletedProcess([], int((p.root / "rc.txt").read_text()), "", (p.root / "err.txt").read_text())
    disk_full(proc, "data/models/gan/checkpoint-8.pt")  # torch.save's RuntimeError, recognised as a full disk
    listing = (p.root / "listing.txt").read_text().split()
    assert "checkpoint-4.pt" in listing and "final.pt" not in listing
    assert not [n for n in listing if n.startswith(".tmp-")]
    assert (p.root / "loads.txt").read_text().strip().endswith("0")  # the last good checkpoint loads

