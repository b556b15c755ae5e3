"""S3-compatible object storage (MODEL_STORE_URL=s3://bucket/prefix): the few calls the stores need.

The endpoint, keys and region come from boto3's own environment variables (AWS_ENDPOINT_URL,
AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_DEFAULT_REGION). Keys here are relative to the prefix
(names: storage.layout). A store that cannot be reached raises StoreUnavailable (503 with Retry-After),
so a write that needs it fails whole and says when to try again.
"""

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlparse

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from prediction_service.core.errors import ServiceError

T = TypeVar("T")
RETRY_AFTER_SECONDS = 5
# A store that does not answer fails a call within seconds rather than holding a request for minutes.
CLIENT_CONFIG = Config(connect_timeout=3, read_timeout=30, retries={"max_attempts": 2, "mode": "standard"})


class StoreUnavailable(ServiceError):
    """The object store did not answer: nothing was written; the same request later will do."""

    status_code = 503

    def __init__(self, detail: str) -> None:
        super().__init__(detail, headers={"Retry-After": str(RETRY_AFTER_SECONDS)})


class MissingObject(KeyError):
    pass


def parse_store_url(url: str) -> tuple[str, str]:
    """`s3://bucket/prefix` -> (bucket, prefix without slashes at either end)."""
    parsed = urlparse(url)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise ValueError(f"MODEL_STORE_URL must look like s3://bucket/prefix, not {url!r}")
    return parsed.netloc, parsed.path.strip("/")


class ObjectStore:
    def __init__(self, url: str) -> None:
        self.url = url
        self.bucket, self.prefix = parse_store_url(url)
        # Path-style addressing for S3-compatible servers behind AWS_ENDPOINT_URL (their host is no bucket DNS).
        style = "path" if os.environ.get("AWS_ENDPOINT_URL") else "auto"
        self.client = boto3.client("s3", config=CLIENT_CONFIG.merge(Config(s3={"addressing_style": style})))

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def _call(self, what: str, call: Callable[[], T]) -> T:
        try:
            return call()
        except ClientError as error:
            status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
            if status >= 500:
                detail = f"the model store ({self.url}) failed to {what}: {error}; retry later"
                raise StoreUnavailable(detail) from error
            raise
        except BotoCoreError as error:  # no connection, a timeout, ...
            raise StoreUnavailable(f"the model store ({self.url}) is unreachable ({error}); retry later") from error

    def keys(self, prefix: str) -> dict[str, float]:
        """Every key under `prefix` (relative to the store's prefix), with its last-modified time (epoch s)."""

        def listing() -> dict[str, float]:
            found: dict[str, float] = {}
            start = len(self._key(""))
            for page in self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=self._key(prefix)
            ):
                for item in page.get("Contents", []):
                    found[item["Key"][start:]] = item["LastModified"].timestamp()
            return found

        return self._call(f"list {prefix}", listing)

    def get(self, key: str) -> bytes:
        def read() -> bytes:
            try:
                body = self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"]
                return bytes(body.read())
            except ClientError as error:
                if _code(error) in ("NoSuchKey", "404"):
                    raise MissingObject(key) from error
                raise

        return self._call(f"read {key}", read)

    def download(self, key: str, path: Path) -> None:
        def fetch() -> None:
            try:
                self.client.download_file(self.bucket, self._key(key), str(path))
            except ClientError as error:
                if _code(error) in ("NoSuchKey", "404"):
                    raise MissingObject(key) from error
                raise

        self._call(f"read {key}", fetch)

    def put(self, key: str, data: bytes) -> None:
        """Write (or replace) `key` whole: readers see the old object or the new one."""
        self._call(f"write {key}", lambda: self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data))

    def upload(self, key: str, path: Path) -> None:
        self._call(f"write {key}", lambda: self.client.upload_file(str(path), self.bucket, self._key(key)))

    def put_new(self, key: str, data: bytes) -> bool:
        """Create `key` only if it does not exist (a conditional write); False if it did."""

        def create() -> bool:
            try:
                self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data, IfNoneMatch="*")
                return True
            except ClientError as error:
                # 412: it exists; 409: another conditional write of the same key is in flight (S3 says so).
                if error.response.get("ResponseMetadata", {}).get("HTTPStatusCode") in (409, 412):
                    return False
                raise

        return self._call(f"create {key}", create)

    def delete(self, keys: list[str]) -> None:
        for start in range(0, len(keys), 1000):  # DeleteObjects takes at most 1,000 keys
            batch = [{"Key": self._key(key)} for key in keys[start : start + 1000]]
            self._call(
                "delete objects",
                lambda batch=batch: self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": batch}),  # type: ignore[misc]
            )


def object_store(url: str | None) -> ObjectStore | None:
    """The object store MODEL_STORE_URL names; None: everything stays in MODEL_DIR."""
    return ObjectStore(url) if url else None


def _code(error: ClientError) -> Any:
    return error.response.get("Error", {}).get("Code")
