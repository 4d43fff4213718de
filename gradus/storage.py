"""S3 access through boto3: one configured client, listing with pagination, errors that name the object."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gradus.errors import DataError

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
        raise DataError(f"{uri}: no {'/'.join(suffixes)} objects under this prefix; check the URI")
    return sorted(objects, key=lambda o: o.key)


def download(client: Any, obj: S3Object, folder: Path) -> Path:
    """Fetch one object into folder (keeping its file name, so the format is recognised)."""
    target = folder / obj.key.replace("/", "__")
    try:
        client.download_file(obj.bucket, obj.key, str(target))
    except Exception as exc:
        raise explain(exc, obj.uri) from None
    return target
