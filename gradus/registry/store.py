"""Object stores the registry (and backup) write to: a local folder or s3://bucket/prefix.

Both offer the two primitives everything else is built on: write-once objects and create-if-absent
(os.link on a filesystem, conditional PUT If-None-Match: * on S3).
"""

from __future__ import annotations

import os
import shutil
import signal
import uuid
from pathlib import Path
from typing import Protocol

from gradus.errors import RegistryError

FAILPOINT_ENV = "GRADUS_FAILPOINT"


def failpoint(name: str) -> None:
    """Fault injection for the reliability tests: GRADUS_FAILPOINT=<name> kills this process right here with
    SIGKILL (as an OOM kill or a lost node would). Unset, as everywhere outside those tests, it does nothing."""
    if os.environ.get(FAILPOINT_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)



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

