"""The layout rules of issue 25, checked on the source: imports run one way (no cycle), no
function-local import except optional heavy dependencies, small modules and functions, and each
dvc.yaml stage lists as deps exactly the pipeline files its command imports."""

from __future__ import annotations

import ast
import subprocess
import sys
from functools import lru_cache
from pathlib import Path

import pytest
import yaml

from conftest import REPO
from pipeline import choices, config
from pipeline.diffaug import AUGMENTS
from pipeline.losses import LOSSES
from pipeline.models import CLASSIFIERS, GAN_ARCHS
from pipeline.models.gans import OPTION_HOOKS

PACKAGES = ("pipeline", "flows")
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60
MAX_PARAMETERS = 7
# imported inside a function on purpose: optional or heavy, needed by one path only
LAZY_OK = {"matplotlib", "datasets", "imblearn", "sklearn", "scipy", "dvc", "prefect_dask", "torchvision.models"}
# (file, module or its top-level package): imported late for a reason the module states
LAZY_BECAUSE = {
    # Prefect reads its settings (PREFECT_HOME, the API URL) from the environment and the working
    # folder when it is imported: serve.main sets both first, then imports Prefect and the flow
    ("flows/serve.py", "httpx"), ("flows/serve.py", "prefect"), ("flows/serve.py", "flows"),
    # the public readers: only load_torch needs torch; pandas, pyarrow and datasets consumers of a
    # release do not wait 1-2 s for it
    ("pipeline/loaders.py", "pipeline.torch_dataset"),
}
# functions whose parameter lists are an outside contract: sklearn's get_params reads every
# __init__ parameter of an estimator; progress_bar and its line writer take tqdm's arguments
WIDE_OK = {("pipeline/oversampler.py", "__init__"), ("pipeline/progress.py", "progress_bar"),
           ("pipeline/progress.py", "__init__")}


def _modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for f in sorted((REPO / pkg).rglob("*.py")):
            parts = f.relative_to(REPO).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            out[name] = f
    return out


def _resolve(name: str, mods: dict[str, Path]) -> str | None:
    """The package module an import name refers to (`pipeline.x.y` -> the longest known prefix)."""
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        cand = ".".join(parts[:i])
        if cand in mods:
            return cand
    return None


def _imports(tree: ast.AST, module: str, mods: dict[str, Path], top_level: bool) -> set[str]:
    found = set()
    nodes = tree.body if top_level else list(ast.walk(tree))
    for node in nodes:
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative import
                pkg = module.split(".")[: -node.level] if not mods[module].name == "__init__.py" else module.split(".")
                base = ".".join(pkg + ([base] if base else []))
            names = [f"{base}.{a.name}" for a in node.names] + [base]
        else:
            continue
        found |= {m for n in names if (m := _resolve(n, mods)) and m != module}
    return found


@lru_cache(maxsize=1)
def _graph() -> dict[str, set[str]]:
    mods = _modules()
    graph = {}
    for name, f in mods.items():
        tree = ast.parse(f.read_text())
        deps = _imports(tree, name, mods, top_level=True)
        # a parent package's __init__ runs first: importing pipeline.x imports pipeline
        graph[name] = {d for d in deps if not name.startswith(d + ".")}
    return graph


def test_no_import_cycle():
    graph, state, cycles = _graph(), {}, []

    def visit(n: str, path: list[str]) -> None:
        state[n] = "open"
        for d in sorted(graph[n]):
            if state.get(d) == "open":
                cycles.append(" -> ".join(path[path.index(d):] + [d]) if d in path else f"{n} -> {d}")
            elif d not in state:
                visit(d, path + [d])
        state[n] = "done"

    for n in sorted(graph):
        if n not in state:
            visit(n, [n])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def _functions(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield node


def test_no_function_local_import_of_our_own_or_light_modules():
    bad = []
    for name, f in _modules().items():
        for fn in _functions(ast.parse(f.read_text())):
            for node in ast.walk(fn):
                if isinstance(node, (ast.Import, ast.ImportFrom)):
                    names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                    rel = str(f.relative_to(REPO))
                    for n in names:
                        lazy = n in LAZY_OK or n.split(".")[0] in LAZY_OK
                        because = (rel, n) in LAZY_BECAUSE or (rel, n.split(".")[0]) in LAZY_BECAUSE
                        if not lazy and not because:
                            bad.append(f"{f.relative_to(REPO)}:{node.lineno} {fn.name}() imports {n}")
    assert not bad, "function-local imports (move them to the top of the module):\n" + "\n".join(bad)


def test_small_modules_and_functions():
    bad = []
    for name, f in _modules().items():
        text = f.read_text()
        lines = len(text.splitlines())
        if lines > MAX_MODULE_LINES:
            bad.append(f"{f.relative_to(REPO)}: {lines} lines > {MAX_MODULE_LINES}")
        for fn in _functions(ast.parse(text)):
            body = fn.end_lineno - fn.lineno + 1
            a = fn.args
            params = [p for p in a.posonlyargs + a.args + a.kwonlyargs if p.arg not in ("self", "cls")]
            if body > MAX_FUNCTION_LINES:
                bad.append(f"{f.relative_to(REPO)}:{fn.lineno} {fn.name}(): {body} lines > {MAX_FUNCTION_LINES}")
            if len(params) > MAX_PARAMETERS and (str(f.relative_to(REPO)), fn.name) not in WIDE_OK:
                bad.append(f"{f.relative_to(REPO)}:{fn.lineno} {fn.name}(): {len(params)} parameters > {MAX_PARAMETERS}")
    assert not bad, "\n".join(bad)


def _closure(start: str) -> set[str]:
    graph, seen, todo = _graph(), set(), [start]
    while todo:
        n = todo.pop()
        if n in seen:
            continue
        seen.add(n)
        todo += graph.get(n, ())
    return seen


def _stage_deps(stage: dict) -> set[str]:
    return {d for d in stage.get("deps", []) if d.startswith("pipeline/")}


def _covered(listed: set[str]) -> set[str]:
    """The package files a list of dvc.yaml deps covers (a folder: every .py file under it)."""
    out = set()
    for d in listed:
        path = REPO / d
        out |= {str(f.relative_to(REPO)) for f in path.rglob("*.py")} if path.is_dir() else {d}
    return out


def stage_code_deps(stage: str) -> set[str]:
    """The package files `augment <stage>` runs: the import closure of `pipeline.stages.<stage>`,
    without the CLI and the two package __init__ files every command loads (the version string,
    the OpenMP wait policy and `stage()`, none of which changes an output)."""
    mods = _modules()
    closure = _closure(f"pipeline.stages.{stage}") - {"pipeline", "pipeline.cli", "pipeline.stages"}
    return {str(mods[m].relative_to(REPO)) for m in closure}


@pytest.mark.parametrize("stage", ["prepare", "plan", "train_gan", "generate", "evaluate", "report"])
def test_dvc_deps_are_the_stage_import_closure(stage):
    """Each stage's command runs `pipeline.stages.<stage>`; the pipeline files dvc.yaml lists for it
    (a folder covers its files) must be exactly its import closure, so `dvc repro` re-runs a stage
    whenever code it runs changed, and not when other code did."""
    spec = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"][stage]
    needed, listed = stage_code_deps(stage), _covered(_stage_deps(spec))
    missing, extra = sorted(needed - listed), sorted(listed - needed)
    assert not missing and not extra, f"dvc.yaml {stage}: add {missing}, remove {extra}"


def test_the_torch_free_choices_match_the_registries_that_dispatch():
    """pipeline.choices (what the config validates against) names exactly the registered
    implementations, with the same traits."""

    assert list(AUGMENTS) == list(choices.AUGMENT_OPS)
    assert list(LOSSES) == list(choices.LOSSES)
    assert [n for n, loss in LOSSES.items() if loss.accepts_label_smoothing] == list(choices.LABEL_SMOOTHING_LOSSES)
    assert list(CLASSIFIERS) == list(choices.CLASSIFIERS)
    assert list(GAN_ARCHS) == list(choices.GAN_ARCHS)
    assert set(OPTION_HOOKS) == set(config.ARCH_NEEDS)
    for name, arch in GAN_ARCHS.items():
        implemented = {option for option, hook in OPTION_HOOKS.items() if getattr(arch, hook)}
        assert implemented == choices.GAN_ARCHS[name], name


def test_reading_params_and_the_light_stages_do_not_load_torch():
    """`augment --help`, prepare, plan, report, the public readers and every bad-params error start
    without torch (seconds)."""
    code = ("import sys; import pipeline.cli, pipeline.stages.prepare, pipeline.stages.plan, pipeline.stages.report; "
            "import pipeline.loaders; from pipeline import params_file; params_file.load(None, {}); "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False", out.stdout + out.stderr
