"""Structure rules: stage deps cover the code each stage runs; imports go one way; no import-time work."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import yaml

from tests.conftest import ROOT

PACKAGES = ("gradus", "tasks", "data_checks", "flows")


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


def test_package_markers_hold_no_logic() -> None:
    for package in PACKAGES:
        tree = ast.parse((ROOT / package / "__init__.py").read_text())
        kinds = {type(node).__name__ for node in tree.body}
        assert kinds <= {"Expr", "Assign"}, f"{package}/__init__.py has {kinds}"


def test_core_and_checks_never_import_prefect_or_flows() -> None:
    for package in ("gradus", "data_checks"):
        for path in (ROOT / package).rglob("*.py"):
            names = {n.split(".")[0] for n in _all_imports(path)}
            assert not names & {"prefect", "flows"}, f"{path.relative_to(ROOT)} imports {names & {'prefect', 'flows'}}"


def _all_imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_importing_core_modules_has_no_side_effects(tmp_path: Path) -> None:
    code = (
        "import sys, os\n"
        "import gradus.cli, gradus.config, gradus.demo, gradus.io, gradus.modeling, gradus.text\n"
        "import data_checks.suite, data_checks.quarantine\n"
        "import tasks.ingest, tasks.validate, tasks.split, tasks.train, tasks.evaluate\n"
        "assert 'prefect' not in sys.modules, 'prefect imported'\n"
        "assert 'torch' not in sys.modules, 'torch imported at import time'\n"
        "print(sorted(os.listdir('.')))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
