"""One reader of tables wherever they are (a file, a glob, an s3:// prefix), and S3 access through boto3.

boto3 rather than fsspec/s3fs (both installed with DVC's S3 support): the registry needs boto3's conditional
writes (If-None-Match) anyway, so one client configuration (retries, checksum mode for S3-compatible servers,
endpoint) and one error mapping serve data sources, the drift monitor, the registry and the prediction log.
"""

from __future__ import annotations

import glob
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from gradus.errors import DataError
from gradus.io import FORMATS, delimiter_hint, read_table

_DENIED = {"AccessDenied", "403", "InvalidAccessKeyId", "SignatureDoesNotMatch", "AllAccessDisabled"}
_MISSING = {"NoSuchKey", "404", "NoSuchBucket", "NotFound"}


@dataclass(frozen=True)
class S3Object:
    """One listed object: enough to fetch it and to say in a manifest which version was read."""

    bucket: str
    key: str
    etag: str
    size: int

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


class NothingToRead(DataError):
    """A location that matches no file or object (yet): readers of logs treat it as empty."""


def split_uri(uri: str) -> tuple[str, str]:
    """s3://bucket/prefix -> (bucket, prefix)."""
    if not uri.startswith("s3://") or len(uri) <= 5:
        raise DataError(f"{uri}: not an s3:// URI (expected s3://bucket/prefix)")
    bucket, _, prefix = uri[5:].partition("/")
    return bucket, prefix


def s3_client(endpoint_url: str | None = None) -> Any:
    """A boto3 S3 client: standard retry mode, and checksums only where required (S3-compatible servers)."""
    import boto3
    from botocore.config import Config

    config = Config(
        retries={"mode": "standard", "max_attempts": 5},
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )
    endpoint = endpoint_url or os.environ.get("AWS_ENDPOINT_URL") or None
    return boto3.client("s3", endpoint_url=endpoint, config=config)


def explain(exc: Exception, uri: str) -> DataError:
    """Turn a botocore error into one line naming the URI and the likely fix."""
    from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError

    if isinstance(exc, NoCredentialsError):
        return DataError(f"{uri}: no AWS credentials; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or a profile)")
    if isinstance(exc, EndpointConnectionError):
        return DataError(f"{uri}: cannot reach the S3 endpoint ({exc}); check endpoint_url / AWS_ENDPOINT_URL")
    if isinstance(exc, ClientError):
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if code in _DENIED:
            return DataError(f"{uri}: access denied ({code}); check the credentials and the bucket policy")
        if code in _MISSING:
            return DataError(f"{uri}: not found ({code}); check the bucket and key")
        return DataError(f"{uri}: S3 error {code}: {exc}")
    return DataError(f"{uri}: {exc}")


def list_objects(client: Any, uri: str, suffixes: tuple[str, ...], page_size: int = 1000) -> list[S3Object]:
    """Every object under the prefix whose name ends with one of `suffixes`, sorted by key (all pages)."""
    bucket, prefix = split_uri(uri)
    objects = []
    pages = client.get_paginator("list_objects_v2").paginate(
        Bucket=bucket, Prefix=prefix, PaginationConfig={"PageSize": page_size})
    try:
        for page in pages:
            for item in page.get("Contents", []):
                if item["Key"].lower().endswith(suffixes):
                    objects.append(S3Object(bucket, item["Key"], item["ETag"].strip('"'), int(item["Size"])))
    except Exception as exc:
        raise explain(exc, uri) from None
    if not objects:
        raise NothingToRead(f"{uri}: no {'/'.join(suffixes)} objects under this prefix; check the URI")
    return sorted(objects, key=lambda o: o.key)


def download(client: Any, obj: S3Object, folder: Path) -> Path:
    """Fetch one object into folder (keeping its file name, so the format is recognised)."""
    target = folder / obj.key.replace("/", "__")
    try:
        client.download_file(obj.bucket, obj.key, str(target))
    except Exception as exc:
        raise explain(exc, obj.uri) from None
    return target


def project_path(location: str, root: Path | None) -> Path:
    """A local location as a path: absolute as given, relative ones taken from `root` (the project) if any."""
    path = Path(location)
    return path if root is None or path.is_absolute() else root / path


@dataclass(frozen=True)
class Table:
    """One file or object read whole: its rows, where it came from, and what identifies that version of it."""

    frame: pd.DataFrame
    uri: str
    info: dict[str, Any] = field(default_factory=dict)  # size and mtime_ns, or etag and size


def read_tables(location: str, *, columns: Sequence[str], fix: str, fmt: str = "auto", delimiter: str = ",",
                endpoint_url: str | None = None, root: Path | None = None) -> list[Table]:
    """Every table a location names: a file, a glob (sorted), or each CSV/JSONL/Parquet object under an s3://
    prefix (sorted by key). Each must hold `columns`; a missing one is an error naming the file and `fix`
    (the params key to set). Relative paths are taken from `root` (the project) when given."""
    if location.startswith("s3://"):
        client = s3_client(endpoint_url)
        tables = []
        with tempfile.TemporaryDirectory(prefix="gradus-s3-") as scratch:
            for obj in list_objects(client, location, tuple(FORMATS)):
                local = download(client, obj, Path(scratch))
                try:
                    frame = require_columns(read_table(local, fmt, delimiter), columns, local, fix, delimiter)
                except DataError as exc:  # name the object, not the temporary copy
                    raise DataError(str(exc).replace(str(local), obj.uri)) from None
                tables.append(Table(frame, obj.uri, {"etag": obj.etag, "size": obj.size}))
        return tables
    pattern = str(project_path(location, root))
    if Path(pattern).is_dir():
        raise DataError(f"{location}: is a directory; give a file, or a glob such as {location}/*.csv")
    paths = sorted(Path(p) for p in glob.glob(pattern, recursive=True) if not Path(p).is_dir())
    if not paths:
        raise NothingToRead(f"{location}: no file matches; give a CSV/JSONL/Parquet file, a glob or an s3:// prefix "
                        "(relative paths are taken from the project root)")
    tables = []
    for path in paths:
        frame = require_columns(read_table(path, fmt, delimiter), columns, path, fix, delimiter)
        stat = path.stat()
        tables.append(Table(frame, str(path), {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}))
    return tables


def read_tables_if_any(location: str, **options: Any) -> list[Table]:
    """read_tables, but [] where nothing matches yet (a log before its first flush)."""
    try:
        return read_tables(location, **options)
    except NothingToRead:
        return []


def require_columns(table: pd.DataFrame, columns: Sequence[str], where: Path | str, fix: str,
                    delimiter: str = ",") -> pd.DataFrame:
    """The table itself, or an error naming the file, the missing columns, the ones found and the fix."""
    missing = [c for c in columns if c not in table.columns]
    if missing:
        found = ", ".join(map(str, table.columns[:10]))
        hint = ""
        if len(table.columns) == 1:  # one column: the header was probably not split at all
            hint = delimiter_hint(str(table.columns[0]), delimiter) or "; one column only: is the delimiter right?"
        raise DataError(f"{where}: missing column(s) {missing}; found [{found}]{hint}. {fix}")
    return table


def write_object(location: str, name: str, data: bytes, endpoint_url: str | None = None,
                 root: Path | None = None) -> str:
    """Write `data` as `name` under a folder or an s3:// prefix, whole or not at all (readers never see a
    part); returns the written file's path or URI."""
    if location.startswith("s3://"):
        bucket, prefix = split_uri(location)
        key = f"{prefix.strip('/')}/{name}" if prefix.strip("/") else name
        try:
            s3_client(endpoint_url).put_object(Bucket=bucket, Key=key, Body=data)
        except Exception as exc:
            raise explain(exc, f"s3://{bucket}/{key}") from None
        return f"s3://{bucket}/{key}"
    folder = project_path(location, root)
    folder.mkdir(parents=True, exist_ok=True)
    temp = folder / f".{name}.tmp"
    temp.write_bytes(data)
    os.replace(temp, folder / name)
    return str(folder / name)
