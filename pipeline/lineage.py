"""Stage lineage as DVC records it: what each dvc.yaml stage reads and writes, and its hashes now.

DVC owns the stages' fingerprints: `stage_inputs` is the `dvc.lock` entry DVC would write for a
stage from the workspace as it is (command, deps with their md5, params values), `output_hashes`
the md5 DVC gives each output. The Prefect flow keys its task cache on the first and checks a
cache hit against the second; nothing here hashes files itself.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from dvc.dependency.param import ParamsDependency
from dvc.repo import Repo
from dvc.stage.serialize import to_single_stage_lockfile


@dataclass(frozen=True)
class StageSpec:
    """One dvc.yaml stage with templates resolved: what it reads (files, params) and writes."""

    name: str
    cmd: str
    deps: tuple[str, ...]
    params: tuple[str, ...]  # dotted params.yaml keys; "" means the whole file
    outs: tuple[str, ...]
    uncached: tuple[str, ...] = ()  # outs with `cache: false` (metrics, plots): git keeps them


def read_stages(root: Path) -> dict[str, StageSpec]:
    """The stages of `root/dvc.yaml` (resolved by DVC itself), in file order."""
    specs = {}
    with Repo(str(root)) as repo:
        for s in repo.index.stages:
            params = [p for d in s.deps if isinstance(d, ParamsDependency) for p in (list(d.params) or [""])]
            deps = [d.def_path for d in s.deps if not isinstance(d, ParamsDependency)]
            outs = tuple(o.def_path for o in s.outs)
            uncached = tuple(o.def_path for o in s.outs if not o.use_cache)
            specs[s.name] = StageSpec(s.name, str(s.cmd), tuple(deps), tuple(params), outs, uncached)
    return specs


def stage_inputs(root: Path, name: str) -> dict:
    """What stage `name`'s result depends on, as DVC sees it now: its `dvc.lock` entry (cmd, deps
    with md5 and size, params values from params.yaml) without the outputs' hashes.

    Two runs with equal inputs produce the same outputs, so the flow's task cache is keyed on it.
    A dep not on disk yet is listed by path alone.
    """
    with Repo(str(root)) as repo:
        stage = next(s for s in repo.index.stages if s.name == name)
        stage.save_deps(allow_missing=True)
        entry = to_single_stage_lockfile(stage)
    entry.pop("outs", None)
    # plain JSON (DVC hands OrderedDicts): the flow's task cache hashes it
    return json.loads(json.dumps({"stage": name, **entry, "outs": [o.def_path for o in stage.outs]}))


def output_hashes(root: Path, name: str) -> dict[str, str | None]:
    """{out path: DVC's md5 of it on disk now} for stage `name`'s outputs; None where it is absent."""
    with Repo(str(root)) as repo:
        stage = next(s for s in repo.index.stages if s.name == name)
        return {o.def_path: o.get_hash().value if o.exists else None for o in stage.outs}
