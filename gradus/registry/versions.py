"""Versions: register a model folder as an immutable, checksummed version; verify, fetch and resolve them."""

from __future__ import annotations

import json
import shutil
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gradus.errors import IntegrityError, RegistryError
from gradus.modeling import sha256_file
from gradus.registry.aliases import ALIASES, AliasBook, AliasState, alias_targets
from gradus.registry.audit import AuditLog, now_utc
from gradus.registry.integrity import (
    MANIFEST,
    MANIFEST_FIELDS,
    VERSION_ID,
    Problem,
    check_safetensors,
    integrity_error,
    model_files,
    problem_of,
    safe_file,
    sha256_bytes,
    sign,
    signature_problem,
    version_id,
)
from gradus.registry.store import LocalStore, Store, failpoint, open_store
from gradus.task_types.seam import task_of


class Registry:
    """Versions (register, verify, fetch, resolve) over one store, with its aliases and audit log."""

    def __init__(self, store: Store, cache_dir: str | Path | None = None) -> None:
        self.store = store
        self.cache_dir = Path(cache_dir) if cache_dir else Path(tempfile.gettempdir()) / "gradus-models"
        self.events = AuditLog(store)
        self.alias_book = AliasBook(store, self.events, self._vouches)

    # -- versions

    def manifest(self, version: str) -> dict[str, Any] | None:
        """A version's manifest (None if there is none), checked: valid JSON, every field, and an id that
        re-derives from its files and lineage. Anything else is an IntegrityError naming the version."""
        if not VERSION_ID.match(version):
            raise RegistryError(f"{version!r} is not a version id (v + 12 hex digits)")
        data = self.store.read(f"versions/{version}/{MANIFEST}")
        return None if data is None else self._parse_manifest(version, data)

    def _parse_manifest(self, version: str, data: bytes) -> dict[str, Any]:
        key = f"versions/{version}/{MANIFEST}"
        try:
            manifest = json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise integrity_error(Problem(version, key, f"not valid JSON ({exc}); the manifest was damaged")) from None
        missing = [f for f in MANIFEST_FIELDS if not isinstance(manifest, dict) or f not in manifest]
        if missing:
            raise integrity_error(Problem(version, key, f"lacks {missing}; the manifest was damaged or edited"))
        derived = version_id(manifest["files"], manifest["lineage"])
        if manifest["version"] != version or derived != version:
            raise integrity_error(Problem(version, key, f"does not match its version id (its files and lineage hash "
                                                        f"to {derived}): the manifest was edited after registration; "
                                                        "refusing it"))
        return manifest

    def _scan(self) -> tuple[list[dict[str, Any]], list[Problem]]:
        manifests, problems = [], []
        ids = sorted({key.split("/")[1] for key in self.store.keys("versions/") if key.endswith(f"/{MANIFEST}")})
        for version in ids:
            try:
                found = self.manifest(version)
            except RegistryError as exc:
                problems.append(problem_of(exc, version, f"versions/{version}/{MANIFEST}"))
                continue
            if found is not None:
                manifests.append(found)
        return sorted(manifests, key=lambda m: m["created_at"]), problems

    def versions(self) -> list[dict[str, Any]]:
        """Every visible, intact version's manifest, oldest first (damaged ones: `damaged()`)."""
        return self._scan()[0]

    def damaged(self) -> list[Problem]:
        """Versions whose manifest is unreadable, incomplete or does not match its id."""
        return self._scan()[1]

    def register(self, model_dir: str | Path, lineage: dict[str, Any], metrics: dict[str, Any],
                 gate: dict[str, Any] | None, run: str, reason: str = "",
                 extra_files: dict[str, Path] | None = None) -> tuple[dict[str, Any], bool]:
        """Store a model folder (plus extra files: name in the version -> path) as an immutable version;
        returns (manifest, created). The same model with the same lineage always gets the same id, so a
        retried run returns the version it made before."""
        model_dir = Path(model_dir)
        files = model_files(model_dir)
        sources = {relative: model_dir / relative for relative in files}
        for relative, path in sorted((extra_files or {}).items()):  # compressed variants, checked the same way
            if not safe_file(relative) or not Path(path).is_file():
                raise IntegrityError(f"{path}: refusing to register {relative!r}: not a file of an allowed kind")
            files[relative] = {"sha256": sha256_file(Path(path)), "size": Path(path).stat().st_size}
            sources[relative] = Path(path)
        version = version_id(files, lineage)
        existing = self.manifest(version)
        if existing is not None:
            self._registered(version, run, reason, "exists")
            self.record_verdict(version, gate, run)
            return existing, False
        for number, relative in enumerate(files, start=1):
            self.store.put_file(f"versions/{version}/files/{relative}", sources[relative])
            failpoint(f"register:file:{number}")
        problems = self._verify_files(version, files)  # read back what the store holds before publishing
        if problems:
            raise IntegrityError("; ".join(map(str, problems)))
        failpoint("register:before-manifest")
        manifest = {"format": 1, "version": version, "created_at": now_utc(), "run": run, "reason": reason,
                    "task": task_of({"lineage": lineage}), "files": files, "lineage": lineage, "metrics": metrics,
                    "gate": gate}
        body = json.dumps(manifest, indent=2, sort_keys=True, default=str).encode()
        if not self.store.create(f"versions/{version}/{MANIFEST}", body):
            # The same run registered concurrently and won: its manifest describes the same files.
            self._registered(version, run, reason, "exists")
            self.record_verdict(version, gate, run)
            return self.manifest(version) or manifest, False
        failpoint("register:after-manifest")
        self._registered(version, run, reason, "ok")
        self.record_verdict(version, gate, run)
        return manifest, True

    # -- records that make manifests and verdicts tamper-evident (tamper-proof with a key)

    def _registered(self, version: str, run: str, reason: str, outcome: str) -> None:
        """Audit the registration with the manifest's digest (and HMAC): an edit of the manifest, its metrics
        or gate included, no longer matches. A run killed between manifest and record gets the record on retry."""
        if outcome == "exists" and AuditLog.registration(version, self.audit_log()) is not None:
            self.audit("register", version=version, run=run, reason=reason, outcome="exists")
            return
        data = self.store.read(f"versions/{version}/{MANIFEST}") or b""
        self.audit("register", version=version, run=run, reason=reason, outcome="ok",
                   details={"manifest_sha256": sha256_bytes(data), "signature": sign(data),
                            "recovered": outcome == "exists"})

    def record_verdict(self, version: str, gate: dict[str, Any] | None, run: str) -> None:
        """Keep a gate verdict as a create-only record named by its digest, the digest (and HMAC) in the audit
        log. The same model judged again stays the same version and gains one more record; `verdict` reads
        the latest."""
        if gate is None:
            return
        body = json.dumps({"version": version, "gate": gate, "run": run, "at": now_utc()}, sort_keys=True,
                          default=str).encode()
        digest = sha256_bytes(body)
        self.store.create(f"versions/{version}/verdicts/{digest}.json", body)
        self.audit("gate-verdict", version=version, run=run, reason="; ".join(gate.get("reasons", [])) or "passed",
                   outcome="passed" if gate.get("passed") else "failed",
                   details={"sha256": digest, "signature": sign(body)})

    def verdict(self, version: str, events: list[dict[str, Any]] | None = None) -> dict[str, Any] | None:
        """The latest gate verdict recorded for a version, checked against its audited digest (and HMAC);
        None when it was never judged. A record that was changed is an IntegrityError. `events`: the audit log,
        when the caller has read it already."""
        judged = [e for e in (self.audit_log() if events is None else events)
                  if e["action"] == "gate-verdict" and e["version"] == version]
        if not judged:
            return None
        details = judged[-1].get("details", {})
        key = f"versions/{version}/verdicts/{details.get('sha256')}.json"
        data = self.store.read(key)
        if data is None or sha256_bytes(data) != details.get("sha256"):
            raise integrity_error(Problem(version, key, "the gate verdict is missing or was changed after it was "
                                                        "recorded; refusing to trust it"))
        if why := signature_problem(data, details.get("signature")):
            raise integrity_error(Problem(version, key, why))
        return json.loads(data)["gate"]

    def record_problems(self, version: str, events: list[dict[str, Any]] | None = None) -> list[Problem]:
        """The manifest against its registration record: digest, and HMAC when a key is configured."""
        key = f"versions/{version}/{MANIFEST}"
        event = AuditLog.registration(version, self.audit_log() if events is None else events)
        if event is None:
            return [Problem(version, key, "no registration record in the audit log; cannot vouch for the manifest")]
        data = self.store.read(key) or b""
        if sha256_bytes(data) != event["details"]["manifest_sha256"]:
            return [Problem(version, key, "changed since registration (its digest does not match the audit log's "
                                          "registration record): metrics, gate or dates were edited")]
        why = signature_problem(data, event["details"].get("signature"))
        return [Problem(version, key, why)] if why else []

    def resolve(self, ref: str) -> str:
        """A version id from an id, a unique id prefix, or an alias name (champion, candidate, previous)."""
        state = self.aliases()
        if ref in ALIASES:
            version = getattr(state, ref)
            if version is None:
                raise RegistryError(f"alias {ref!r} is not set; `gradus models list` shows the aliases")
            return self._alias_target(ref, version, state)
        if ref == "canary":
            if not state.canary:
                raise RegistryError("no canary is set")
            return self._alias_target(ref, state.canary.get("version"), state)
        if VERSION_ID.match(ref) and self.manifest(ref) is not None:  # a damaged one raises, naming itself
            return ref
        ids = {m["version"] for m in self.versions()}
        matches = sorted(v for v in ids if len(ref) >= 4 and v.startswith(ref))
        if len(matches) == 1:
            return matches[0]
        hint = f"ambiguous: {', '.join(matches)}" if matches else "no such version"
        raise RegistryError(f"{ref!r}: {hint}; `gradus models list` shows the versions in {self.store.location}")

    def _alias_target(self, name: str, value: Any, state: AliasState) -> str:
        """An alias value, only if it is a version id naming an existing version."""
        where = f"aliases/{state.generation:012d}.json"
        if not isinstance(value, str) or not VERSION_ID.match(value):
            detail = f"alias {name} = {value!r} is not a version id; the alias record was edited; refusing it"
        elif self.manifest(value) is None:
            detail = f"alias {name} = {value}: no such version (its manifest is missing)"
        else:
            return value
        raise integrity_error(Problem(f"alias {name}", where, detail), f"{where}: {detail}")

    def alias_problems(self) -> list[Problem]:
        """Every set alias that is not a version id or names no existing, intact version."""
        state = self.aliases()
        problems = []
        for name, value in alias_targets(state.mapping()).items():
            if value is None and not (name == "canary" and state.canary):
                continue
            try:
                self._alias_target(name, value, state)
            except RegistryError as exc:
                problems.append(problem_of(exc, f"alias {name}", f"aliases/{state.generation:012d}.json"))
        return problems

    def require(self, ref: str) -> dict[str, Any]:
        manifest = self.manifest(self.resolve(ref))
        if manifest is None:  # pragma: no cover - resolve only returns visible versions
            raise RegistryError(f"{ref}: manifest vanished")
        return manifest

    # -- integrity and loading

    def _verify_files(self, version: str, files: dict[str, dict[str, Any]],
                      folder: Path | None = None) -> list[Problem]:
        """Compare each stored file with its manifest entry (in `folder` if given, else read from the store)."""
        problems = []
        with tempfile.TemporaryDirectory(prefix="gradus-verify-") as scratch:
            for relative, expected in files.items():
                key = f"versions/{version}/files/{relative}"
                if not safe_file(relative):
                    problems.append(Problem(version, key, "not an allowed file type (pickle?); refusing it"))
                    continue
                path = folder / relative if folder else self._local_copy(key, Path(scratch) / "f")
                if path is None or not path.is_file():
                    problems.append(Problem(version, key, "missing"))
                    continue
                digest = sha256_file(path)
                if digest != expected["sha256"]:
                    problems.append(Problem(version, key, f"sha256 {digest[:16]}… does not match the manifest "
                                                          f"({expected['sha256'][:16]}…): the file was changed"))
                elif relative.endswith(".safetensors") and (why := check_safetensors(path)):
                    problems.append(Problem(version, key, why))
        return problems

    def _local_copy(self, key: str, scratch: Path) -> Path | None:
        if isinstance(self.store, LocalStore):
            return self.store.path(key)
        return scratch if self.store.fetch(key, scratch) else None

    def verify(self, ref: str | None = None) -> list[Problem]:
        """Everything that vouches for one version (or all, with the aliases): manifest id and record, files
        against the manifest, files the manifest does not list, the latest gate verdict."""
        manifests, problems = ([self.require(ref)], []) if ref else self._scan()
        events = self.audit_log()  # read once for every version's records
        for manifest in manifests:
            problems += self._version_problems(manifest, events)
        return problems + ([] if ref else self.alias_problems())

    def _version_problems(self, manifest: dict[str, Any], events: list[dict[str, Any]]) -> list[Problem]:
        version = manifest["version"]
        problems = self.record_problems(version, events) + self._verify_files(version, manifest["files"])
        try:
            self.verdict(version, events)
        except IntegrityError as exc:
            problems.append(problem_of(exc, version, f"versions/{version}/verdicts/"))
        return problems + self._unlisted(manifest)

    def fetch(self, ref: str) -> tuple[Path, dict[str, Any]]:
        """A verified local folder holding the version's files (a local registry is verified in place)."""
        manifest = self.require(ref)
        version = manifest["version"]
        if isinstance(self.store, LocalStore):
            folder = self.store.path(f"versions/{version}/files")
        else:
            folder = self.cache_dir / version
            if not folder.is_dir() or self._verify_files(version, manifest["files"], folder):
                folder = self._download(version, manifest)
        problems = (self.record_problems(version) + self._verify_files(version, manifest["files"], folder)
                    + self._unlisted(manifest))
        if problems:
            raise IntegrityError("refusing to load: " + "; ".join(map(str, problems)))
        return folder, manifest

    def _unlisted(self, manifest: dict[str, Any]) -> list[Problem]:
        """Files in a version's folder that its manifest does not list (put there after registration)."""
        version = manifest["version"]
        listed = {f"versions/{version}/files/{name}" for name in manifest["files"]}
        return [Problem(version, key, "not in the manifest (placed there after registration)")
                for key in self.store.keys(f"versions/{version}/files/", temporary=True) if key not in listed]

    def _download(self, version: str, manifest: dict[str, Any]) -> Path:
        target = self.cache_dir / version
        partial = self.cache_dir / f".{version}.{uuid.uuid4().hex}.partial"
        for relative in manifest["files"]:
            if not safe_file(relative):
                continue  # never even written to disk; _verify_files names it
            (partial / relative).parent.mkdir(parents=True, exist_ok=True)
            self.store.fetch(f"versions/{version}/files/{relative}", partial / relative)
        shutil.rmtree(target, ignore_errors=True)
        partial.rename(target)
        return target

    # -- aliases

    def aliases(self) -> AliasState:
        return self.alias_book.state()

    def update_aliases(self, change: Callable[[AliasState], dict[str, Any]], *, action: str, run: str,
                       reason: str, expected_generation: int | None = None) -> AliasState:
        """Compare-and-swap of the alias map (`AliasBook.update`)."""
        return self.alias_book.update(change, action=action, run=run, reason=reason,
                                      expected_generation=expected_generation)

    def _vouches(self, version: str) -> bool:
        return self.manifest(version) is not None and not self.record_problems(version)

    def promote(self, ref: str, *, run: str, reason: str, expected_generation: int | None = None) -> AliasState:
        """Make a version the champion; the old champion becomes `previous`."""
        version = self.resolve(ref)

        def change(state: AliasState) -> dict[str, Any]:
            if state.champion == version:
                return {}
            return {"champion": version, "previous": state.champion}

        return self.update_aliases(change, action="promote", run=run, reason=reason,
                                   expected_generation=expected_generation)

    def rollback(self, *, run: str, reason: str, expected_generation: int | None = None) -> AliasState:
        """Make `previous` the champion again (and clear `previous`, so a second rollback cannot flip back)."""
        state = self.aliases()
        if state.previous is None:
            raise RegistryError("nothing to roll back to: alias 'previous' is not set")
        return self.update_aliases(lambda s: {"champion": s.previous, "previous": None}, action="rollback",
                                   run=run, reason=reason, expected_generation=expected_generation)

    def set_shadow(self, ref: str | None, *, run: str, reason: str,
                   expected_generation: int | None = None) -> AliasState:
        """Give a version a copy of live traffic (its answers logged, never returned); None clears it."""
        shadow = None if ref is None else self.resolve(ref)
        return self.update_aliases(lambda s: {"shadow": shadow}, action="shadow", run=run, reason=reason,
                                   expected_generation=expected_generation)

    def set_canary(self, ref: str | None, weight: float, *, run: str, reason: str,
                   expected_generation: int | None = None) -> AliasState:
        """Route `weight` (0..1) of traffic to a version during a gradual release; None clears it."""
        if not 0.0 <= weight <= 1.0:
            raise RegistryError(f"canary weight {weight} must be between 0 and 1")
        canary = None if ref is None else {"version": self.resolve(ref), "weight": weight}
        return self.update_aliases(lambda s: {"canary": canary}, action="canary", run=run, reason=reason,
                                   expected_generation=expected_generation)

    # -- audit

    def audit(self, action: str, *, run: str, reason: str, outcome: str, version: str | None = None,
              details: dict[str, Any] | None = None) -> None:
        """Append one event to the audit log."""
        self.events.append(action, run=run, reason=reason, outcome=outcome, version=version, details=details)

    def audit_log(self) -> list[dict[str, Any]]:
        """Every audit event, oldest first (read incrementally: only events new since the last call)."""
        return self.events.events()


def open_registry(uri: str, endpoint_url: str | None = None, cache: str | Path | None = None,
                  base: Path | None = None) -> Registry:
    """The registry at a local folder or s3:// URI (relative paths from `base`, the project root)."""
    cache_path = None if cache is None else (Path(cache) if Path(cache).is_absolute() or base is None
                                             else base / cache)
    return Registry(open_store(uri, endpoint_url, base), cache_path)


def project_registry(root: Path, params: Any) -> Registry:
    """The registry params.yaml names (`registry:` section), relative paths taken from the project root."""
    cfg = params.registry
    return open_registry(cfg.uri, cfg.endpoint_url, cfg.cache, root)
