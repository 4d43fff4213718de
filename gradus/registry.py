"""Model registry: immutable, checksummed versions with lineage, and aliases changed only by compare-and-swap.

Layout under the registry root (a local folder or s3://bucket/prefix), every object written once:

    versions/<id>/files/<path>   the model folder (safetensors weights, config, tokenizer, label map)
    versions/<id>/manifest.json  sha256 of every file + lineage + metrics + gate report; written LAST,
                                 create-only: a version exists exactly when its manifest does
    aliases/<generation>.json    the whole alias map after change number <generation> (12 digits)
    audit/<time>-<nonce>.json    one event per change or refused change (append-only)

Why by hand: MLflow's registry needs a tracking server and has neither compare-and-swap aliases nor
checksum-verified loads; DVC's model registry (GTO) keeps aliases as git tags, which a service cannot
change atomically. Both primitives here (write-once objects, create-if-absent) exist on a filesystem
(os.link) and on S3 (conditional PUT, If-None-Match: *).
"""

from __future__ import annotations

import getpass
import hashlib
import hmac
import json
import os
import re
import shutil
import signal
import socket
import tempfile
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from gradus.ensemble import ENSEMBLE_FILE
from gradus.errors import ConflictError, IntegrityError, ModelError, RegistryError
from gradus.modeling import WEIGHTS_FILE, sha256_file

# Version-valued aliases. `shadow`: a version that gets a copy of live traffic (answers logged, never returned).
ALIASES = ("champion", "candidate", "previous", "shadow")
# Allow-list: weights only as safetensors; everything else a model needs is JSON or plain text. A pickle
# (.bin, .pt, .pkl, ...) can run code when loaded, so it never enters or leaves the registry.
SAFE_SUFFIXES = (".safetensors", ".json", ".txt", ".model", ".onnx")  # ONNX: protobuf, no code
FAILPOINT_ENV = "GRADUS_FAILPOINT"
MANIFEST = "manifest.json"
VERSION_ID = re.compile(r"^v[0-9a-f]{12}$")
MANIFEST_FIELDS = ("format", "version", "created_at", "run", "files", "lineage", "metrics")
# A secret kept outside the store (environment or a Prefect Secret block put into it): with it, manifests and
# gate verdicts carry an HMAC that nobody without the key can forge; without it they are tamper-evident only.
KEY_ENV = "GRADUS_REGISTRY_KEY"


def version_id(files: dict[str, Any], lineage: dict[str, Any]) -> str:
    """A version's id: a hash of its files and lineage (metrics, verdicts and dates are not part of it, so the
    same model re-judged stays the same version)."""
    identity = json.dumps({"files": files, "lineage": lineage}, sort_keys=True, default=str)
    return "v" + hashlib.sha256(identity.encode()).hexdigest()[:12]


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sign(data: bytes) -> str | None:
    """HMAC-SHA256 of data with the registry key, or None when no key is configured."""
    key = os.environ.get(KEY_ENV)
    return hmac.new(key.encode(), data, hashlib.sha256).hexdigest() if key else None


def signature_problem(data: bytes, recorded: str | None) -> str | None:
    """Why a recorded signature does not vouch for data (None: it does, or no key is configured)."""
    expected = sign(data)
    if expected is None:
        return None
    if not recorded:
        return f"not signed, but {KEY_ENV} is set: it was written without the key (or by someone who lacks it)"
    return None if hmac.compare_digest(expected, recorded) else f"HMAC signature does not match ({KEY_ENV})"


def failpoint(name: str) -> None:
    """Fault injection for the reliability tests: GRADUS_FAILPOINT=<name> kills this process right here with
    SIGKILL (as an OOM kill or a lost node would). Unset, as everywhere outside those tests, it does nothing."""
    if os.environ.get(FAILPOINT_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)


def now_utc() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def actor() -> str:
    """Who made a change: the OS user and host (the run id says which pipeline run)."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # containers without a passwd entry
        user = str(os.getuid())
    return f"{user}@{socket.gethostname()}"


# --------------------------------------------------------------------------------------------- stores


class Store(Protocol):
    """The five operations the registry needs; each backend makes `create` atomic."""

    location: str

    def put_file(self, key: str, source: Path) -> None: ...
    def create(self, key: str, data: bytes) -> bool: ...
    def read(self, key: str) -> bytes | None: ...
    def fetch(self, key: str, target: Path) -> bool: ...
    def keys(self, prefix: str, temporary: bool = False) -> list[str]: ...
    def delete(self, key: str) -> None: ...


class LocalStore:
    """A registry in a local (or network-mounted) folder."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.location = str(self.root)

    def path(self, key: str) -> Path:
        return self.root / key

    def _temp(self, target: Path) -> Path:
        target.parent.mkdir(parents=True, exist_ok=True)
        return target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")

    def put_file(self, key: str, source: Path) -> None:
        target = self.path(key)
        temp = self._temp(target)
        shutil.copyfile(source, temp)
        os.replace(temp, target)  # readers see the old file or the whole new one, never a part

    def create(self, key: str, data: bytes) -> bool:
        """Write `data` at `key` only if nothing is there; atomic: link(2) fails if the name exists."""
        target = self.path(key)
        temp = self._temp(target)
        with temp.open("wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(temp, target)
            return True
        except FileExistsError:
            return False
        finally:
            temp.unlink(missing_ok=True)

    def read(self, key: str) -> bytes | None:
        try:
            return self.path(key).read_bytes()
        except FileNotFoundError:
            return None

    def fetch(self, key: str, target: Path) -> bool:
        if not self.path(key).is_file():
            return False
        shutil.copyfile(self.path(key), target)
        return True

    def keys(self, prefix: str, temporary: bool = False) -> list[str]:
        """Keys under prefix; our own in-flight `*.tmp` files only when asked (an integrity check wants all)."""
        base = self.path(prefix)
        if not base.is_dir():
            return []
        found = [p.relative_to(self.root).as_posix() for p in base.rglob("*")
                 if p.is_file() and (temporary or not p.name.endswith(".tmp"))]
        return sorted(found)

    def delete(self, key: str) -> None:
        self.path(key).unlink(missing_ok=True)


class S3Store:
    """A registry under s3://bucket/prefix through boto3 (credentials from the environment)."""

    def __init__(self, uri: str, endpoint_url: str | None = None) -> None:
        from gradus.storage import s3_client, split_uri

        self.location = uri.rstrip("/")
        self.bucket, prefix = split_uri(uri)
        self.prefix = prefix.strip("/")
        self.client = s3_client(endpoint_url)

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def _error(self, exc: Exception, key: str) -> RegistryError:
        from gradus.storage import explain

        return RegistryError(str(explain(exc, f"s3://{self.bucket}/{self._key(key)}")))

    def put_file(self, key: str, source: Path) -> None:
        try:
            self.client.upload_file(str(source), self.bucket, self._key(key))
        except Exception as exc:
            raise self._error(exc, key) from None

    def create(self, key: str, data: bytes) -> bool:
        """Conditional PUT (If-None-Match: *): S3 rejects it with 412 when the key exists. The read-back
        also catches S3-compatible servers that check the condition non-atomically or ignore it."""
        from botocore.exceptions import ClientError

        try:
            self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data, IfNoneMatch="*")
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in {"PreconditionFailed", "412", "ConditionalRequestConflict", "409"}:
                return False
            raise self._error(exc, key) from None
        except Exception as exc:
            raise self._error(exc, key) from None
        return self.read(key) == data

    @staticmethod
    def _missing(exc: Exception) -> bool:
        from botocore.exceptions import ClientError

        return isinstance(exc, ClientError) and str(
            exc.response.get("Error", {}).get("Code", "")) in {"NoSuchKey", "404", "NotFound"}

    def read(self, key: str) -> bytes | None:
        try:
            return self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"].read()
        except Exception as exc:
            if self._missing(exc):
                return None
            raise self._error(exc, key) from None

    def fetch(self, key: str, target: Path) -> bool:
        try:
            self.client.download_file(self.bucket, self._key(key), str(target))
            return True
        except Exception as exc:
            if self._missing(exc):
                return False
            raise self._error(exc, key) from None

    def keys(self, prefix: str, temporary: bool = False) -> list[str]:
        start = len(self.prefix) + 1 if self.prefix else 0
        found = []
        try:
            for page in self.client.get_paginator("list_objects_v2").paginate(
                    Bucket=self.bucket, Prefix=self._key(prefix)):
                found += [item["Key"][start:] for item in page.get("Contents", [])]
        except Exception as exc:
            raise self._error(exc, prefix) from None
        return sorted(found)

    def delete(self, key: str) -> None:
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self._key(key))
        except Exception as exc:
            raise self._error(exc, key) from None


def open_store(uri: str, endpoint_url: str | None = None, base: Path | None = None) -> Store:
    """A store for an s3:// URI or a local folder (relative folders are taken from `base`)."""
    if uri.startswith("s3://"):
        return S3Store(uri, endpoint_url)
    path = Path(uri).expanduser()
    return LocalStore(path if path.is_absolute() or base is None else base / path)


# ------------------------------------------------------------------------------------------ records


@dataclass(frozen=True)
class AliasState:
    """The alias map after `generation` changes (0: nothing ever set)."""

    generation: int = 0
    champion: str | None = None
    candidate: str | None = None
    previous: str | None = None
    shadow: str | None = None
    canary: dict[str, Any] | None = None  # {"version": id, "weight": 0..1} for gradual release
    change: dict[str, Any] = field(default_factory=dict)

    def mapping(self) -> dict[str, Any]:
        return {"champion": self.champion, "candidate": self.candidate, "previous": self.previous,
                "shadow": self.shadow, "canary": self.canary}

    def names_for(self, version: str) -> list[str]:
        names = [name for name in ALIASES if getattr(self, name) == version]
        if self.canary and self.canary.get("version") == version:
            names.append(f"canary({self.canary['weight']:g})")
        return names


@dataclass(frozen=True)
class Problem:
    """One integrity finding: the file (registry key) at fault and what is wrong with it."""

    version: str
    key: str
    detail: str

    def __str__(self) -> str:
        return f"{self.version}: {self.key}: {self.detail}"


def integrity_error(problem: Problem, message: str | None = None) -> IntegrityError:
    """An IntegrityError carrying the Problem it reports, so verify can list it without parsing the message."""
    error = IntegrityError(message or str(problem))
    error.problem = problem  # type: ignore[attr-defined]
    return error


def problem_of(error: RegistryError, version: str, key: str) -> Problem:
    """The Problem an error carries, or one built from its message (errors raised without one)."""
    return getattr(error, "problem", None) or Problem(version, key, str(error))


def alias_targets(aliases: dict[str, Any]) -> dict[str, str | None]:
    """The version each alias of an alias map names (the canary's is inside its record)."""
    return {name: aliases.get(name) for name in ALIASES} | {"canary": (aliases.get("canary") or {}).get("version")}


def safe_file(name: str) -> bool:
    return name.lower().endswith(SAFE_SUFFIXES)


def check_safetensors(path: Path) -> str | None:
    """Why `path` is not a well-formed safetensors file, or None. Reads the header only: never unpickles."""
    size = path.stat().st_size
    with path.open("rb") as handle:
        head = handle.read(8)
        if len(head) < 8:
            return "too short to be safetensors"
        length = int.from_bytes(head, "little")
        if length < 2 or length > min(size - 8, 100 << 20):
            return "not safetensors (bad header length; a pickle or other format?)"
        header = handle.read(length)
    try:
        parsed = json.loads(header)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return "not safetensors (header is not JSON)"
    return None if isinstance(parsed, dict) else "not safetensors (header is not a JSON object)"


def model_files(folder: Path) -> dict[str, dict[str, Any]]:
    """sha256 and size of every file of a model folder; refuses anything but safetensors, JSON and text."""
    if not folder.is_dir():
        raise RegistryError(f"{folder}: model folder not found; run the train stage first")
    files = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        relative = path.relative_to(folder).as_posix()
        if not safe_file(relative):
            raise IntegrityError(f"{path}: refusing to register {relative!r}: only safetensors weights and "
                                 "JSON/text files are allowed (pickle files can run code when loaded)")
        if relative.endswith(".safetensors") and (why := check_safetensors(path)):
            raise IntegrityError(f"{path}: {why}")
        files[relative] = {"sha256": sha256_file(path), "size": path.stat().st_size}
    if WEIGHTS_FILE not in files and ENSEMBLE_FILE not in files:
        raise IntegrityError(f"{folder}: no {WEIGHTS_FILE}; gradus registers safetensors weights only")
    return files


# ----------------------------------------------------------------------------------------- registry


class Registry:
    """Versions, aliases and the audit log over one store."""

    def __init__(self, store: Store, cache_dir: str | Path | None = None) -> None:
        self.store = store
        self.cache_dir = Path(cache_dir) if cache_dir else Path(tempfile.gettempdir()) / "gradus-models"

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
                    "files": files, "lineage": lineage, "metrics": metrics, "gate": gate}
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
        if outcome == "exists" and self._registration(version, self.audit_log()) is not None:
            self.audit("register", version=version, run=run, reason=reason, outcome="exists")
            return
        data = self.store.read(f"versions/{version}/{MANIFEST}") or b""
        self.audit("register", version=version, run=run, reason=reason, outcome="ok",
                   details={"manifest_sha256": sha256_bytes(data), "signature": sign(data),
                            "recovered": outcome == "exists"})

    @staticmethod
    def _registration(version: str, events: list[dict[str, Any]]) -> dict[str, Any] | None:
        return next((e for e in events if e["action"] == "register" and e["version"] == version
                     and e["outcome"] == "ok" and e.get("details", {}).get("manifest_sha256")), None)

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
        event = self._registration(version, self.audit_log() if events is None else events)
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

    def load(self, ref: str, device: str = "cpu", bf16: bool | None = None, backend: str = "torch",
             batch_size: int = 32) -> Any:
        """A verified version (id, prefix or alias) ready to predict: from safetensors (backend torch), one of
        its ONNX variants that passed parity (onnx, onnx-int8), the fastest of those on this machine (auto:
        timed in batches of batch_size), or, for an ensemble version, its members. It knows its version id,
        the alias it was loaded by, its training max_length and its manifest."""
        from gradus import compression
        from gradus.ensemble import build_ensemble
        from gradus.modeling import load_classifier

        folder, manifest = self.fetch(ref)
        version, alias = manifest["version"], ref if ref in (*ALIASES, "canary") else None
        if ENSEMBLE_FILE in manifest["files"]:
            members = json.loads((folder / ENSEMBLE_FILE).read_text(encoding="utf-8"))["members"]
            loaded = [self.load(m["version"], device, bf16, backend, batch_size) for m in members]
            return build_ensemble(loaded, [m["weight"] for m in members], version=version, alias=alias,
                                  manifest=manifest)
        max_length = manifest["lineage"]["params"]["train"]["max_length"]
        variants = [v for v in compression.VARIANTS if compression.variant_file(v) in manifest["files"]]

        def variant(name: str) -> Any:
            return compression.load_onnx(folder / compression.variant_file(name), folder, name,
                                         max_length=max_length, version=version, alias=alias, manifest=manifest)

        if backend in compression.VARIANTS:
            if backend not in variants:
                raise ModelError(f"version {version} has no {backend} variant that passed parity (it has: "
                                 f"{', '.join(variants) or 'none'}); serve it with backend torch or auto")
            return variant(backend)
        model = load_classifier(folder, device, max_length=max_length, version=version, alias=alias, bf16=bf16,
                                manifest=manifest)
        if backend != "auto" or device != "cpu" or not variants:  # the variants run on the CPU only
            return model
        return compression.fastest([model, *map(variant, variants)], batch_size)

    # -- aliases

    def aliases(self) -> AliasState:
        keys = self.store.keys("aliases/")
        if not keys:
            return AliasState()
        data = self.store.read(keys[-1])
        if data is None:  # pragma: no cover - written once, never deleted
            raise RegistryError(f"{self.store.location}/{keys[-1]} vanished")
        try:
            record = json.loads(data)
            values = {name: record["aliases"].get(name) for name in (*ALIASES, "canary")}
            return AliasState(generation=int(record["generation"]), change=record.get("change", {}), **values)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise IntegrityError(f"{keys[-1]}: the alias record is damaged ({type(exc).__name__}: {exc})") from None

    def update_aliases(self, change: Callable[[AliasState], dict[str, Any]], *, action: str, run: str,
                       reason: str, expected_generation: int | None = None) -> AliasState:
        """Apply `change` (current state -> new alias values) as generation N+1, only if N is still the
        latest. Losing that race raises ConflictError; both outcomes go to the audit log."""
        current = self.aliases()
        base = current.generation if expected_generation is None else expected_generation
        new = {**current.mapping(), **change(current)}
        unchanged = alias_targets(current.mapping())
        for name, target in alias_targets(new).items():
            # A new target is checked, and so is the canary at every change: each one sends it more traffic.
            if target is not None and (target != unchanged[name] or name == "canary") and (
                    self.manifest(target) is None or self.record_problems(target)):
                raise IntegrityError(f"cannot point {name} at {target}: no such version, or its manifest does not "
                                     "match its registration record (`gradus models verify " + target + "`)")
        if new == current.mapping() and base == current.generation:
            return current  # nothing to change (a retried run)
        record = {"generation": base + 1, "aliases": new,
                  "change": {"action": action, "run": run, "reason": reason, "at": now_utc(), "by": actor(),
                             "before": current.mapping(), "after": new}}
        failpoint("aliases:before-write")
        won = base == current.generation and self.store.create(
            f"aliases/{base + 1:012d}.json", json.dumps(record, indent=2, sort_keys=True).encode())
        if not won:
            latest = self.aliases()
            self.audit(action, run=run, reason=reason, outcome="conflict",
                       details={"expected_generation": base, "latest_generation": latest.generation,
                                "wanted": new})
            by = latest.change.get("run") or "another run"
            if base > latest.generation:
                raise ConflictError(f"expected generation {base}, but the registry is only at generation "
                                    f"{latest.generation}; nothing was changed — read the current one with "
                                    "`gradus models list` and pass that")
            raise ConflictError(
                f"aliases changed concurrently: expected generation {base}, the registry is at generation "
                f"{latest.generation} (last change: {latest.change.get('action')} by {by}); "
                "nothing was changed — re-read with `gradus models list` and retry")
        self.audit(action, run=run, reason=reason, outcome="ok",
                   details={"generation": base + 1, "before": current.mapping(), "after": new})
        return self.aliases()

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

    # -- retrains started by the drift monitor (one record per batch, claimed create-only)

    def trigger(self, batch: str) -> dict[str, Any] | None:
        data = self.store.read(f"monitor/triggers/{batch}.json")
        return json.loads(data) if data is not None else None

    def triggers(self) -> list[dict[str, Any]]:
        return [json.loads(data) for key in self.store.keys("monitor/triggers/") if (data := self.store.read(key))]

    def claim_trigger(self, batch: str, record: dict[str, Any]) -> bool:
        """Claim a batch for one retrain; False if a monitor run already did (concurrent runs included)."""
        return self.store.create(f"monitor/triggers/{batch}.json",
                                 json.dumps({"at": now_utc(), **record}, sort_keys=True, default=str).encode())

    def release_trigger(self, batch: str) -> None:
        """Give a claim back when the retrain could not be started, so the next run may try again."""
        self.store.delete(f"monitor/triggers/{batch}.json")

    # -- drift verdicts (the service exposes the latest as metrics, so alerts need no extra component)

    def record_drift(self, verdict: dict[str, Any]) -> None:
        """Keep one drift monitor verdict (write-once, named by time)."""
        stamp = now_utc().replace("-", "").replace(":", "")
        self.store.create(f"monitor/drift/{stamp}-{uuid.uuid4().hex[:8]}.json",
                          json.dumps(verdict, sort_keys=True, default=str).encode())

    def latest_drift(self) -> dict[str, Any] | None:
        keys = self.store.keys("monitor/drift/")
        data = self.store.read(keys[-1]) if keys else None
        return json.loads(data) if data else None

    # -- audit

    def audit(self, action: str, *, run: str, reason: str, outcome: str, version: str | None = None,
              details: dict[str, Any] | None = None) -> None:
        """Append one event (never rewritten: each is its own write-once object)."""
        at = now_utc()
        event = {"at": at, "action": action, "version": version, "run": run, "by": actor(), "reason": reason,
                 "outcome": outcome, "details": details or {}}
        stamp = at.replace("-", "").replace(":", "")
        self.store.create(f"audit/{stamp}-{uuid.uuid4().hex[:8]}.json",
                          json.dumps(event, sort_keys=True, default=str).encode())

    def audit_log(self) -> list[dict[str, Any]]:
        events = [json.loads(data) for key in self.store.keys("audit/") if (data := self.store.read(key))]
        return sorted(events, key=lambda e: e["at"])


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
