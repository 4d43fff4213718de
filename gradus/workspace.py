"""Run workspaces: every flow run works in a copy of the project of its own, so no run's overrides reach another
run or the user's working tree.

A workspace is a folder under runs.folder (`.gradus/runs/ws-N`, ignored by git and DVC) holding the project's
files as the user has them (tracked and untracked-but-not-ignored, as git lists them), a params.yaml with the
run's overrides applied, its own dvc.lock and pipeline outputs, and links to what runs share: the registry, its
local cache, the data sources outside the inputs folder, the feedback and prediction-log folders. DVC in the
workspace uses the project's DVC cache and remotes, so stages restored from DVC's run cache cost a checkout, and
models pushed from a run reach the project's remote.

Workspaces are pooled (runs.workspaces of them): a run takes a free one, preferring the one whose last run had
the same params and overrides (DVC then finds every stage up to date), else a new one, else the one used
longest ago; with every workspace busy it waits, saying for which runs. An OS file lock marks a workspace busy,
so a run that dies frees it.

Written by hand because neither tool does this for a pipeline of several task runs: `dvc exp run --temp` runs the
whole pipeline in one command in a throwaway copy (no Prefect task run per stage, no outputs to register
afterwards), and Prefect runs a flow in whatever folder it is given.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gradus.catalogue import read_catalogue, source_for, source_location
from gradus.config.editing import write_overrides
from gradus.config.params import Params, load_params
from gradus.config.pipeline import PARAMS_FILE
from gradus.errors import GradusError

SYNCED = "synced.json"       # inside a workspace: the files last copied from the project
STATE = "ws-{slot}.json"     # beside the workspaces: holder and last run of each
_GLOB = set("*?[")
# Not copied into a workspace: its own DVC state and lock file, and the DVC folder's internals (its config is
# copied, with the cache and remotes pointed at the project's).
_NOT_SYNCED = ("dvc.lock", ".dvc/")
WAIT_LOG_EVERY_S = 60.0


class WorkspaceBusy(GradusError):
    """Every run workspace stayed busy for longer than runs.wait_timeout_s."""


@dataclass
class Workspace:
    """The folder a run works in, and what the run found there."""

    path: Path
    slot: int
    reused: bool                 # held a previous run's outputs (DVC may find stages up to date)
    same_params: bool            # ... of a run with the same params and overrides
    changes: dict[str, Any] = field(default_factory=dict)
    params: Params | None = None

    def describe(self) -> str:
        how = ("reused: its last run had the same params" if self.same_params else
               "reused: outputs of an earlier run with other params" if self.reused else "new")
        return f"{self.path} ({how})"


def run_fingerprint(root: Path, overrides: list[str], add_sources: list[str]) -> str:
    """What decides a run's params: the project's params.yaml bytes and the run's overrides."""
    digest = hashlib.sha256((root / PARAMS_FILE).read_bytes())
    digest.update(json.dumps([overrides, add_sources]).encode())
    return digest.hexdigest()


def _project_files(root: Path) -> list[str]:
    """The files the user has in the project, as git lists them: tracked (still present) and untracked but not
    ignored. Ignored files are outputs, caches and virtualenvs: never copied."""
    done = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=root,
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise GradusError(f"{root}: `git ls-files` failed ({done.stderr.strip()}); flow runs need a git checkout "
                          "(DVC versions data alongside git)")
    names = dict.fromkeys(name for name in done.stdout.split("\0") if name)
    return [name for name in names
            if not name.startswith(_NOT_SYNCED) and name not in _NOT_SYNCED and (root / name).is_file()]


def _copy_if_changed(source: Path, target: Path) -> None:
    stat = source.stat()
    if target.is_file() and not target.is_symlink():
        mine = target.stat()
        if mine.st_size == stat.st_size and mine.st_mtime_ns == stat.st_mtime_ns:
            return
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.is_symlink() or target.is_dir():
        _remove(target)
    shutil.copy2(source, target)  # a copy, never a link: the run edits params.yaml, never the user's file


def _remove(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path)


def sync_project(root: Path, workspace: Path, inputs: str) -> int:
    """Make the workspace's copy of the project's files match the project (changed files copied, removed
    ones removed); the inputs folder (DVC-watched user data, often ignored by git) is mirrored whole, by hard
    link where the filesystem allows. Returns the number of files copied."""
    names = _project_files(root)
    previous_file = workspace / ".gradus-workspace" / SYNCED
    previous = set(json.loads(previous_file.read_text())) if previous_file.is_file() else set()
    for name in previous - set(names):
        if _inside(workspace, (workspace / name).parent):
            (workspace / name).unlink(missing_ok=True)
    copied = 0
    for name in names:
        if not _inside(workspace, (workspace / name).parent):
            continue  # under a shared location's link (a tracked file in the registry folder): the project's own
        before = (workspace / name).stat().st_mtime_ns if (workspace / name).is_file() else None
        _copy_if_changed(root / name, workspace / name)
        copied += before != (workspace / name).stat().st_mtime_ns
    copied += _mirror_inputs(root / inputs, workspace / inputs)
    previous_file.parent.mkdir(parents=True, exist_ok=True)
    previous_file.write_text(json.dumps(sorted(names)))
    return copied


def _mirror_inputs(source: Path, target: Path) -> int:
    if not source.is_dir():
        return 0
    wanted = {p.relative_to(source) for p in source.rglob("*") if p.is_file()}
    if target.is_dir():
        for stale in [p for p in target.rglob("*") if p.is_file() and p.relative_to(target) not in wanted]:
            stale.unlink()
    linked = 0
    for relative in wanted:
        src, dst = source / relative, target / relative
        if dst.is_file() and os.path.samefile(src, dst):
            continue
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.unlink(missing_ok=True)
        try:
            os.link(src, dst)  # user data is only read by the stages: a link costs nothing, whatever the size
        except OSError:
            shutil.copy2(src, dst)
        linked += 1
    return linked


def shared_locations(params: Params, root: Path, extra_sources: list[Any]) -> list[str]:
    """Relative local paths the run must read or write in the project itself, not in a copy: the registry and
    its cache, feedback and the prediction log, and every local data source outside the inputs folder."""
    sources = [*params.data.sources, *extra_sources]
    candidates = [params.registry.uri, params.registry.cache, params.serving.feedback,
                  params.serving.prediction_log.uri]
    candidates += [str(s.path) for s in sources if getattr(s, "kind", "") in ("file", "feedback", "hf") and s.path]
    inputs = Path(params.paths.inputs)
    # The run's own outputs: a link must never cover one (its writes would land in the project).
    owned = [Path(path) for name, path in params.paths.model_dump().items() if name not in ("tune", "drift_reports")]
    bases = []
    for location in candidates:
        if "://" in location or Path(location).is_absolute():
            continue
        parts = []
        for part in Path(location).parts:
            if _GLOB & set(part):
                break
            parts.append(part)
        base = Path(*parts) if parts else Path()
        if base == inputs or inputs in base.parents:
            continue  # inside the mirrored inputs
        if base == Path() or any(base == path or base in path.parents for path in owned):
            # A folder that also holds outputs (`data/*.csv`): link the matching files one by one.
            bases += [str(path.relative_to(root)) for path in sorted(root.glob(location)) if path.is_file()]
            continue
        bases.append(str(base))
    return list(dict.fromkeys(bases))


def link_shared(root: Path, workspace: Path, locations: list[str], directories: set[str]) -> None:
    """Point each shared location of the workspace at the project's (a folder is created in the project first,
    so writes through the link land there). A location under one already linked is reached through that link;
    nothing but a link of the workspace's own is ever replaced (a copied file stays a copy)."""
    linked: list[Path] = []
    for location in sorted(locations, key=lambda loc: len(Path(loc).parts)):
        relative = Path(location)
        if any(parent == relative or parent in relative.parents for parent in linked):
            continue
        target, link = root / relative, workspace / relative
        if location in directories:
            target.mkdir(parents=True, exist_ok=True)
        linked.append(relative)
        if link.is_symlink() and os.readlink(link) == str(target):
            continue
        if (link.exists() and not link.is_symlink()) or not _inside(workspace, link.parent):
            continue
        link.parent.mkdir(parents=True, exist_ok=True)
        link.unlink(missing_ok=True)  # a stale link of an earlier run: only a link, never what it points at
        link.symlink_to(target, target_is_directory=target.is_dir())


def _inside(workspace: Path, path: Path) -> bool:
    """True when `path`, links resolved, is in the workspace (a write there cannot reach the project)."""
    return path.resolve().is_relative_to(workspace.resolve())


def configure_dvc(root: Path, workspace: Path) -> None:
    """The workspace's DVC: the project's cache and remotes (local paths made absolute), and no git (the
    workspace lives in an ignored folder of the project's repository; the run's lineage names the project's
    commit)."""
    from dvc.config import Config

    project = Config(dvc_dir=str(root / ".dvc"))
    cache_dir = project["cache"].get("dir") or str(root / ".dvc" / "cache")
    local_file = workspace / ".dvc" / "config.local"
    local_file.unlink(missing_ok=True)
    with Config(dvc_dir=str(workspace / ".dvc")).edit("local") as local:
        local["core"]["no_scm"] = True
        local["cache"]["dir"] = str(cache_dir)
        for name, remote in project["remote"].items():
            local["remote"][name] = dict(remote)  # credentials of config.local included; urls resolved absolute
        if project["core"].get("remote"):
            local["core"]["remote"] = project["core"]["remote"]


def _apply_run_params(workspace: Path, overrides: list[str], add_sources: list[dict[str, Any]]) -> dict[str, Any]:
    """The run's overrides and added sources written into the workspace's params.yaml (never the project's)."""
    params_file = workspace / PARAMS_FILE
    params = load_params(params_file)
    declared = [source_location(s) for s in params.data.sources]
    kept = {entry.location() for entry in read_catalogue(workspace / params.paths.catalogue)}
    # A source already declared or kept in the catalogue is read once, not twice.
    new = [s for s in add_sources if (s.get("path") or s.get("uri")) not in {*declared, *kept}]
    changes = write_overrides(params_file, overrides, new)
    if new:
        changes["data.sources"] = {"old": f"{len(declared)} sources",
                                   "new": "+ " + ", ".join(str(s.get("path") or s.get("uri")) for s in new)}
    return changes


class _Pool:
    """The workspaces of one project and their locks."""

    def __init__(self, root: Path, params: Params) -> None:
        self.size = params.runs.workspaces
        self.folder = (root / params.runs.folder).resolve()

    def state(self, slot: int) -> dict[str, Any]:
        file = self.folder / STATE.format(slot=slot)
        try:
            return json.loads(file.read_text())
        except (OSError, ValueError):
            return {}

    def write_state(self, slot: int, **values: Any) -> None:
        file = self.folder / STATE.format(slot=slot)
        tmp = file.with_suffix(".tmp")
        tmp.write_text(json.dumps({**self.state(slot), **values}, indent=2))
        tmp.replace(file)

    def order(self, fingerprint: str) -> list[int]:
        """Slots to try, best first: same params as this run, then a new one, then the longest unused."""
        existing = [slot for slot in range(self.size) if (self.folder / f"ws-{slot}").is_dir()]
        same = [slot for slot in existing if self.state(slot).get("fingerprint") == fingerprint]
        new = [slot for slot in range(self.size) if slot not in existing]
        rest = sorted((s for s in existing if s not in same), key=lambda s: self.state(s).get("finished_at", ""))
        return same + new[:1] + rest

    def try_lock(self, slot: int) -> int | None:
        fd = os.open(self.folder / f"ws-{slot}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        return fd

    def holders(self) -> str:
        states = [(slot, self.state(slot)) for slot in range(self.size)]
        return "; ".join(f"ws-{slot}: {s.get('run', '?')} since {s.get('started_at', '?')} (pid {s.get('pid')})"
                         for slot, s in states)

    def acquire(self, fingerprint: str, run: str, timeout_s: float, log: Callable[[str], None]) -> tuple[int, int]:
        self.folder.mkdir(parents=True, exist_ok=True)
        deadline, last_log = time.monotonic() + timeout_s, 0.0
        while True:
            for slot in self.order(fingerprint):
                fd = self.try_lock(slot)
                if fd is not None:
                    self.write_state(slot, run=run, pid=os.getpid(),
                                     started_at=datetime.now(UTC).isoformat(timespec="seconds"))
                    return slot, fd
            if time.monotonic() > deadline:
                raise WorkspaceBusy(f"run {run}: every run workspace stayed busy for {timeout_s:g} s "
                                    f"({self.holders()}); raise runs.workspaces or runs.wait_timeout_s")
            if time.monotonic() - last_log >= WAIT_LOG_EVERY_S:
                log(f"run {run} waits for a free run workspace: all {self.size} are busy ({self.holders()})")
                last_log = time.monotonic()
            time.sleep(1.0)


@contextmanager
def run_workspace(root: Path, run: str, overrides: list[str] | None = None, add_sources: list[str] | None = None,
                  log: Callable[[str], None] = print) -> Iterator[Workspace]:
    """Hold a workspace for one run: the project's files synced into it, the run's overrides and added sources
    written into its params.yaml, DVC pointed at the project's cache and remotes. Released (lock and all) on exit;
    its outputs stay for the next run to reuse."""
    root = root.resolve()
    overrides, add_sources = list(overrides or []), list(add_sources or [])
    params = load_params(root / PARAMS_FILE, overrides)  # a bad override fails here, before anything is touched
    pool = _Pool(root, params)
    fingerprint = run_fingerprint(root, overrides, add_sources)
    slot, fd = pool.acquire(fingerprint, run, params.runs.wait_timeout_s, log)
    try:
        path = pool.folder / f"ws-{slot}"
        state = pool.state(slot)
        reused = (path / "dvc.lock").is_file()
        path.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        copied = sync_project(root, path, params.paths.inputs)
        configure_dvc(root, path)
        label = params.drift.label_column or "label"
        new_sources = [source_for(loc, params.drift.text_column, label) for loc in add_sources]
        changes = _apply_run_params(path, overrides, new_sources)
        run_params = load_params(path / PARAMS_FILE)
        for dependency in (run_params.paths.catalogue, run_params.paths.inputs):  # ingest's, even when empty
            (path / dependency).mkdir(parents=True, exist_ok=True)
        catalogue = [e.source for e in read_catalogue(path / run_params.paths.catalogue)]
        directories = {run_params.registry.uri, run_params.registry.cache, run_params.serving.feedback,
                       run_params.serving.prediction_log.uri}
        link_shared(root, path, shared_locations(run_params, root, catalogue), directories)
        workspace = Workspace(path, slot, reused, reused and state.get("fingerprint") == fingerprint, changes,
                              run_params)
        log(f"run {run} works in {workspace.describe()}; {copied} project files copied in "
            f"{time.perf_counter() - started:.1f} s")
        yield workspace
        pool.write_state(slot, fingerprint=fingerprint, finished_at=datetime.now(UTC).isoformat(timespec="seconds"))
    finally:
        pool.write_state(slot, pid=None)
        os.close(fd)  # closing the descriptor releases the lock


def newest_outputs(root: Path, params: Params) -> Path:
    """Where the pipeline last ran: the run workspace or the project itself (`dvc repro` there), whichever
    wrote its dvc.lock last; its splits and reports are the newest."""
    folder = (root / params.runs.folder).resolve()
    candidates = [root, *(folder / f"ws-{slot}" for slot in range(params.runs.workspaces))]
    found = [path for path in candidates if (path / "dvc.lock").is_file()]
    return max(found, key=lambda path: (path / "dvc.lock").stat().st_mtime_ns) if found else root
