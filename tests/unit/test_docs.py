"""The docs a newcomer walks: every internal link resolves (file and heading), every `gradus` command and
option they show exists, every params key they show is one params.yaml accepts, and MkDocs builds them
strictly."""

from __future__ import annotations

import re
import subprocess
import sys
import unicodedata
from pathlib import Path
from typing import Annotated, Any, Union, get_args, get_origin

import pytest
import typer
from pydantic import BaseModel

from gradus.config.params import Params
from tests.conftest import ROOT

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"(?<!!)\[[^\]]+\]\(([^)\s]+)\)")
CODE = re.compile(r"`([^`\n]+)`|^(?: {4}|\t)(.+)$", re.M)
COMMAND = re.compile(r"(?:^|[\s/(])gradus((?: [a-z][a-z-]*)+)")
SECTIONS = "|".join(sorted({(f.alias or n) for n, f in Params.model_fields.items()}))
KEY = re.compile(rf"(?<![\w/.$-])(?:{SECTIONS})(?:\.[A-Za-z_0-9]+)+(?![\w/-])")
FILE_LIKE = re.compile(r"\.(Dockerfile|py|json|jsonl|yaml|yml|safetensors|csv|parquet|html|md|txt|onnx|lock|log)$")


def slug(heading: str) -> str:
    """Python-Markdown's toc slug (what MkDocs puts on a heading): ASCII, lowercase, words joined by '-'."""
    text = unicodedata.normalize("NFKD", heading).encode("ascii", "ignore").decode()
    text = re.sub(r"[^\w\s-]", "", text).strip().lower()
    return re.sub(r"[-\s]+", "-", text)


def anchors(page: Path) -> set[str]:
    return {slug(m[1]) for m in re.finditer(r"^#{1,6} (.+)$", page.read_text(), re.M)}


def code_of(page: Path) -> list[str]:
    """What a page shows as code: inline code spans and indented code blocks."""
    return [m[1] or m[2] for m in CODE.finditer(page.read_text())]


def test_every_internal_link_resolves_to_a_page_and_heading() -> None:
    checked = 0
    for page in PAGES:
        for target in LINK.findall(page.read_text()):
            if re.match(r"[a-z]+:", target):
                continue
            path, _, anchor = target.partition("#")
            resolved = (page.parent / path).resolve() if path else page
            assert resolved.exists(), f"{page.relative_to(ROOT)}: link to {target} — no such file"
            if anchor:
                assert anchor in anchors(resolved), f"{page.relative_to(ROOT)}: link to {target} — no such heading"
            checked += 1
    assert checked >= 30


def _cli() -> Any:
    from cli.main import app

    return typer.main.get_command(app)  # Typer's group: .commands maps each name to its command


def command_problem(root: Any, shown: str) -> str | None:
    """Why `gradus <shown>` is not a command (with the options shown), or None."""
    command: Any = root
    for word in shown.split():
        if not hasattr(command, "commands"):
            break  # a leaf command: the rest are its arguments
        if word not in command.commands:
            return f"gradus {shown}: {word!r} is not a command of {command.name or 'gradus'}"
        command = command.commands[word]
    return None


def option_problems(root: Any, line: str) -> list[str]:
    """Options shown after a command on one line that the command does not take."""
    problems = []
    for match in COMMAND.finditer(line):
        command: Any = root
        for word in match[1].split():
            if word not in getattr(command, "commands", {}):
                break
            command = command.commands[word]
        rest = line[match.end():].split("|")[0].split("#")[0]
        known = {o for p in command.params for o in (*p.opts, *p.secondary_opts)}
        shown = re.findall(r"(?<![\w-])--[a-z][a-z-]*", rest)
        problems += [f"gradus {match[1].strip()} has no option {o}" for o in shown if o not in known | {"--help"}]
    return problems


def test_every_command_and_option_the_docs_show_exists() -> None:
    root = _cli()
    shown = 0
    for page in PAGES:
        for code in code_of(page):
            for match in COMMAND.finditer(code):
                shown += 1
                problem = command_problem(root, match[1].strip())
                assert problem is None, f"{page.relative_to(ROOT)}: {problem}"
            assert not option_problems(root, code), f"{page.relative_to(ROOT)}: {option_problems(root, code)}"
    assert shown >= 40


def key_problem(key: str) -> str | None:
    """Why a dotted params key is not one params.yaml accepts, or None."""
    node: Any = Params
    parts = key.split(".")
    for depth, part in enumerate(parts):
        if part.isupper():
            return None  # a placeholder (train.KEY, data.sources.N): any key or index from here
        node = _unwrap(node)
        if isinstance(node, type) and issubclass(node, BaseModel):
            field = next((f for n, f in node.model_fields.items() if part in (n, f.alias)), None)
            if field is None:
                return f"{'.'.join(parts[:depth + 1])} is not a key (allowed: {', '.join(node.model_fields)})"
            node = field.annotation
        elif get_origin(node) is dict:
            node = get_args(node)[1]
        elif get_origin(node) in (list, tuple):
            if not part.isdigit():
                return f"{'.'.join(parts[:depth])} is a list: the next part is an index"
            node = get_args(node)[0]
        else:
            return f"{'.'.join(parts[:depth])} is a value, not a section"
    return None


def _unwrap(annotation: Any) -> Any:
    """X from X | None, Annotated[X, ...]; the model of a discriminated union of models (data sources)."""
    while get_origin(annotation) in (Union, type(int | None), Annotated):
        options = [a for a in get_args(annotation) if a is not type(None)]
        models = [a for a in options if isinstance(a, type) and issubclass(a, BaseModel)]
        if len(models) > 1:
            return _Merged.of(models)
        annotation = models[0] if models else options[0]
    return annotation


class _Merged(BaseModel):
    """Every key any of several models has (a source item's keys differ by kind)."""

    @staticmethod
    def of(models: list[type[BaseModel]]) -> type[BaseModel]:
        fields = {n: (f.annotation, None) for m in models for n, f in m.model_fields.items()}
        from pydantic import create_model

        return create_model("AnySource", **fields)  # type: ignore[call-overload]


def test_every_params_key_the_docs_show_is_accepted() -> None:
    shown = 0
    for page in PAGES:
        for code in code_of(page):
            if "unknown key" in code:
                continue  # an error message quoting a wrong key
            for key in KEY.findall(code):
                key = key.split("=")[0]
                if FILE_LIKE.search(key):
                    continue
                shown += 1
                problem = key_problem(key)
                assert problem is None, f"{page.relative_to(ROOT)}: `{key}`: {problem}"
    assert shown >= 60


def test_the_checks_fail_on_a_wrong_key_command_option_or_link(tmp_path: Path) -> None:
    """Each check above can fail."""
    assert key_problem("train.epochs") is None and key_problem("data.sources.0.rows") is None
    assert "not a key" in (key_problem("train.epoch") or "")
    assert "not a key" in (key_problem("serving.prediction_log.url") or "")
    root = _cli()
    assert command_problem(root, "models list") is None
    assert "not a command" in (command_problem(root, "modles list") or "")
    assert "not a command" in (command_problem(root, "models lst") or "")
    assert option_problems(root, "gradus run --sett train.epochs=1") == ["gradus run has no option --sett"]
    page = tmp_path / "page.md"
    page.write_text("# Title\n## A heading\n")
    assert anchors(page) == {"title", "a-heading"}


def test_mkdocs_builds_the_docs_strictly(tmp_path: Path) -> None:
    pytest.importorskip("mkdocs", reason="mkdocs is a dev dependency: make install")
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                          cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "site" / "architecture" / "index.html").is_file()
