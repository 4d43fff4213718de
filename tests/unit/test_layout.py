"""Structure rules: stage deps cover the code each stage runs; imports go one way; no import-time work."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT

PACKAGES = ("gradus", "tasks", "data_checks", "flows", "infra", "cli", "serving")
DYNAMIC_IMPORTERS = {"import_module", "__import__", "find_spec", "run_module"}


def module_file(name: str) -> Path | None:
    path = ROOT / Path(*name.split("."))
    if path.with_suffix(".py").is_file():
        return path.with_suffix(".py")
    return path / "__init__.py" if (path / "__init__.py").is_file() else None


def imported_modules(path: Path) -> set[str]:
    """Project modules a file imports anywhere in it (top level or inside functions)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return {name for name in found if name.split(".")[0] in PACKAGES and module_file(name)}


def closure(start: list[str]) -> set[Path]:
    seen: set[Path] = set()
    todo = [module_file(name) for name in start]
    while todo:
        path = todo.pop()
        if path is None or path in seen:
            continue
        seen.add(path)
        todo += [module_file(name) for name in imported_modules(path)]
    return seen


def test_every_stage_depends_on_all_the_code_it_runs() -> None:
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    for name, stage in stages.items():
        assert stage["cmd"] == f"python -m tasks {name}"
        deps = [d for d in stage["deps"] if not d.startswith("${")]
        for path in closure(["tasks.__main__", f"tasks.{name}"]):
            relative = path.relative_to(ROOT).as_posix()
            if path.name == "__init__.py":
                continue  # package markers: checked below to hold no logic
            assert any(relative == d or (d.endswith("/") and relative.startswith(d)) for d in deps), (
                f"dvc.yaml stage {name} runs {relative} but does not list it in deps")


def test_no_stage_depends_on_the_operations_settings_code() -> None:
    """Editing how the service, release, drift or search settings are modelled reruns no stage: the stages read
    their own sections (StageParams) and never import the rest of the config code."""
    for name in yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]:
        code = {p.relative_to(ROOT).as_posix() for p in closure(["tasks.__main__", f"tasks.{name}"])}
        assert "gradus/config/pipeline.py" in code
        assert not code & {"gradus/config/operations.py", "gradus/config/params.py", "gradus/config/editing.py"}, (
            f"stage {name} imports the operations' settings code")


def test_package_markers_hold_no_logic() -> None:
    for package in PACKAGES:
        tree = ast.parse((ROOT / package / "__init__.py").read_text())
        kinds = {type(node).__name__ for node in tree.body}
        assert kinds <= {"Expr", "Assign"}, f"{package}/__init__.py has {kinds}"


# The house drawn from its imports: cli → (flows, infra) → tasks → (data_checks, gradus); serving → gradus;
# benchmarks above all. A layer may import itself and what is listed; Prefect is a layer of its own (only the
# orchestration may import it). Nothing imports cli but the benchmarks and tests (its process helpers).
LAYERS = ("gradus", "data_checks", "tasks", "flows", "infra", "serving", "cli", "benchmarks")
ALLOWED = {
    "gradus": {"gradus"},
    "data_checks": {"data_checks", "gradus"},
    "tasks": {"tasks", "data_checks", "gradus"},
    "flows": {"flows", "tasks", "data_checks", "gradus", "prefect"},
    "infra": {"infra", "flows", "tasks", "data_checks", "gradus", "prefect"},
    "serving": {"serving", "gradus"},
    "cli": {"cli", "flows", "infra", "tasks", "data_checks", "gradus", "serving", "prefect"},
    "benchmarks": {*LAYERS, "prefect"},
}


def layer_violations(path: Path, layer: str) -> set[str]:
    """The layers (and Prefect) a file of `layer` imports but may not."""
    reached = {name.split(".")[0] for name in all_imports(path)} & {*LAYERS, "prefect"}
    return reached - ALLOWED[layer]


def test_every_layer_imports_only_the_layers_below_it() -> None:
    checked = 0
    for layer in LAYERS:
        for path in (ROOT / layer).rglob("*.py"):
            checked += 1
            bad = layer_violations(path, layer)
            assert not bad, f"{path.relative_to(ROOT)} ({layer}) imports {sorted(bad)}"
    assert checked > 80


@pytest.mark.parametrize("layer", LAYERS[:-1])
def test_the_layering_check_fails_for_each_rule(tmp_path: Path, layer: str) -> None:
    """Every rule can fail: a file of each layer that imports one layer it may not is caught, whether the
    import is a statement or a string handed to importlib."""
    forbidden = sorted({*LAYERS, "prefect"} - ALLOWED[layer])
    assert forbidden
    for target in forbidden:
        statement = tmp_path / "statement.py"
        statement.write_text(f"def f():\n    from {target} import thing\n    return thing\n")
        hidden = tmp_path / "hidden.py"
        hidden.write_text(f"import importlib\n\nLATER = importlib.import_module('{target}.module')\n")
        assert layer_violations(statement, layer) == {target}
        assert layer_violations(hidden, layer) == {target}


def test_the_layering_check_sees_string_imports(tmp_path: Path) -> None:
    """The check above can fail: an edge hidden in a string handed to importlib is still an edge."""
    sneaky = tmp_path / "sneaky.py"
    sneaky.write_text("import importlib\n\ndef f():\n    return importlib.import_module('flows.training')\n")
    assert "flows.training" in all_imports(sneaky)
    sneaky.write_text("def f(name):\n    return __import__(f'tasks.{name}')\n")
    assert {n.split(".")[0] for n in all_imports(sneaky)} == {"tasks"}
    sneaky.write_text("from importlib import import_module as load\nload('prefect')\n")
    assert "prefect" in all_imports(sneaky)


def _string_prefix(node: ast.AST) -> str | None:
    """The literal text (or literal start of an f-string) of an argument."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr) and node.values and isinstance(node.values[0], ast.Constant):
        return str(node.values[0].value)
    return None


def all_imports(path: Path) -> set[str]:
    """Every module a file imports: import statements anywhere, and strings passed to importlib/__import__."""
    names = set()
    tree = ast.parse(path.read_text())
    aliases = {a.asname or a.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
               and node.module in {"importlib", "importlib.util", "runpy"} for a in node.names}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Call) and node.args:
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
            if called in DYNAMIC_IMPORTERS | aliases and (text := _string_prefix(node.args[0])):
                names.add(text)
    return names


def test_importing_core_modules_has_no_side_effects(tmp_path: Path) -> None:
    code = (
        "import sys, os\n"
        "import cli.main, gradus.config, gradus.demo, gradus.io, gradus.modeling, gradus.text, gradus.servable\n"
        "import gradus.registry.versions, gradus.registry.candidates, gradus.monitoring.drift, gradus.pipeline\n"
        "import gradus.tuning, gradus.release.controller\n"
        "import data_checks.suite, data_checks.quarantine\n"
        "import tasks.runner, tasks.ingest, tasks.validate, tasks.split, tasks.train, tasks.evaluate, tasks.gate\n"
        "import serving.app, serving.server\n"
        "assert 'prefect' not in sys.modules, 'prefect imported'\n"
        "assert 'torch' not in sys.modules, 'torch imported at import time'\n"
        "print(sorted(os.listdir('.')))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_nothing_reads_outside_the_repository() -> None:
    """A user's clone has nothing beside it: no path may climb out to a sibling folder (the shared data)."""
    escape = re.compile(r"""\.\./shared|["']shared["']\s*/|/\s*["']shared["']|parents?\[?\d?\]?\s*/\s*["']shared""")
    checked = 0
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, text=True, check=True).stdout.splitlines()
    for relative in listed:
        path = ROOT / relative
        if (not path.is_file() or relative.startswith("benchmarks/data/")
                or path.suffix not in {".py", ".sh", ".yaml", ".yml", ".toml", ".cfg", ""}):
            continue
        checked += 1
        text = path.read_text(errors="replace")
        assert not escape.search(text), f"{relative} refers to a path outside the repository: {escape.search(text)[0]}"
    assert checked > 50


def test_no_module_shadows_a_top_level_package() -> None:
    """Prefect loads a deployment's entrypoint (flows/training.py) with its folder first on sys.path: a module
    there named like a package (flows/tasks.py) would then be imported instead of it (tasks/, the stages)."""
    packages = set(PACKAGES) | {"prefect", "dvc", "torch", "transformers"}
    for folder in PACKAGES:
        shadowing = sorted(p.name for p in (ROOT / folder).glob("*.py") if p.stem in packages)
        assert not shadowing, f"{folder}/ holds {shadowing}: named like a package it would hide"
