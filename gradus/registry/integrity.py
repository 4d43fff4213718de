"""What vouches for a version: its id, file digests, HMAC signatures, and which files may be stored at all."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gradus.ensemble import ENSEMBLE_FILE
from gradus.errors import IntegrityError, RegistryError
from gradus.modeling import WEIGHTS_FILE, sha256_file

# Allow-list: weights only as safetensors; everything else a model needs is JSON or plain text. A pickle
# (.bin, .pt, .pkl, ...) can run code when loaded, so it never enters or leaves the registry.
SAFE_SUFFIXES = (".safetensors", ".json", ".txt", ".model", ".onnx")  # ONNX: protobuf, no code
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
