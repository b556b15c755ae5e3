"""Versioned model artifacts on disk (names: storage.layout).

A version folder appears by an atomic rename of a fully written, fsynced
temporary folder, and the serving pointer changes only after that, so a crash at
any point leaves either the old state or the new one.
"""

import hashlib
import json
import logging
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from filelock import FileLock

from prediction_service.core.errors import Conflict, NotFound
from prediction_service.core.files import publish_folder, staged_folder, write_atomic
from prediction_service.storage.layout import MANIFEST, POINTER, SHADOW_POINTER, STAGING_PREFIX, Layout

log = logging.getLogger(__name__)


class CorruptVersion(Conflict):
    """A version folder that is incomplete or whose files do not match its manifest."""


@dataclass(frozen=True)
class StoredVersion:
    name: str
    version: int
    path: Path
    manifest: dict[str, Any]


@dataclass(frozen=True)
class ServingPointer:
    version: int
    history: list[int] = field(default_factory=list)

    def candidates(self) -> Iterator[int]:
        """The serving version, then earlier serving versions, newest first: the fallbacks."""
        seen = set()
        for version in [self.version, *reversed(self.history)]:
            if version not in seen:
                seen.add(version)
                yield version

    def published(self) -> set[int]:
        """Every version that has served (a stored version not in it is a rejected candidate)."""
        return {self.version, *self.history}


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _file_stamp(path: Path) -> tuple[int, int] | None:
    """Cheap change detector for a pointer file: (inode, mtime in ns); None while it does not exist."""
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None
    return stat.st_ino, stat.st_mtime_ns


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class ModelStore:
    def __init__(self, root: Path) -> None:
        self.layout = Layout(root)

    def model_path(self, name: str) -> Path:
        return self.layout.model(name)

    def lock(self, name: str, purpose: str = "versions") -> FileLock:
        """A lock shared by every process using this MODEL_DIR (released if the holder dies)."""
        self.model_path(name).mkdir(parents=True, exist_ok=True)
        return FileLock(self.layout.lock(name, purpose))

    # Versions

    def version_numbers(self, name: str) -> list[int]:
        path = self.model_path(name)
        if not path.is_dir():
            return []
        return sorted(int(entry.name) for entry in path.iterdir() if entry.name.isdigit() and entry.is_dir())

    def read_version(self, name: str, version: int, verify: bool = True) -> StoredVersion:
        """The version's manifest; with `verify`, also check every file against its hash."""
        path = self.model_path(name) / str(version)
        if not path.is_dir():
            raise NotFound(f"model {name!r} has no version {version}; GET /models lists the versions")
        try:
            manifest = json.loads((path / MANIFEST).read_text())
            files = manifest["files"]
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise CorruptVersion(f"{name} version {version} is damaged: unreadable manifest ({error})") from error
        if verify:
            for filename, expected in files.items():
                file_path = path / filename
                if not file_path.is_file() or sha256_file(file_path) != expected["sha256"]:
                    raise CorruptVersion(
                        f"{name} version {version} is damaged: {filename} is missing or does not match its manifest"
                    )
        return StoredVersion(name, version, path, manifest)

    def list_versions(self, name: str) -> list[StoredVersion]:
        """Every version with a readable manifest, oldest first (no hash check: cheap)."""
        versions = []
        for number in self.version_numbers(name):
            try:
                versions.append(self.read_version(name, number, verify=False))
            except CorruptVersion as error:
                log.warning("skipping version: %s", error)
        return versions

    def add_version(
        self,
        name: str,
        write_artifacts: Callable[[Path], None],
        manifest: dict[str, Any],
    ) -> StoredVersion:
        """Write a new immutable version: artifacts and manifest to a temporary folder,
        fsync, then rename it to the next version number. Does not make it serve."""
        model_path = self.model_path(name)
        with staged_folder(model_path, STAGING_PREFIX) as staging:
            write_artifacts(staging)
            files = {
                entry.name: {"sha256": sha256_file(entry), "bytes": entry.stat().st_size}
                for entry in sorted(staging.iterdir())
                if entry.is_file()
            }
            with self.lock(name):
                version = max(self.version_numbers(name), default=0) + 1
                full_manifest = {"name": name, "version": version, "created_at": utc_now(), **manifest}
                full_manifest["files"] = files
                (staging / MANIFEST).write_text(json.dumps(full_manifest, indent=2, default=str))
                final = model_path / str(version)
                publish_folder(staging, final)
        log.info("stored %s version %d", name, version)
        return StoredVersion(name, version, final, full_manifest)

    def remove_partial_versions(self, name: str) -> list[str]:
        """Delete temporary folders left by a writer that died (call with no writer running)."""
        path = self.model_path(name)
        removed = []
        if path.is_dir():
            for entry in path.iterdir():
                if entry.name.startswith(STAGING_PREFIX) and entry.is_dir():
                    shutil.rmtree(entry, ignore_errors=True)
                    removed.append(entry.name)
        return removed

    # The serving pointer

    def serving(self, name: str) -> ServingPointer | None:
        try:
            data = json.loads((self.model_path(name) / POINTER).read_text())
            return ServingPointer(int(data["version"]), [int(v) for v in data.get("history", [])])
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as error:
            log.warning("unreadable serving pointer of %s: %s", name, error)
            return None

    def pointer_stamp(self, name: str) -> tuple[int, int] | None:
        """Cheap change detector for the pointer file: (inode, mtime in ns)."""
        return _file_stamp(self.model_path(name) / POINTER)

    def set_serving(self, name: str, version: int) -> ServingPointer:
        """Point the model at `version` (which must exist and verify); atomic."""
        self.read_version(name, version)
        with self.lock(name):
            current = self.serving(name)
            history = [] if current is None else [*current.history, current.version]
            pointer = ServingPointer(version, history[-50:])
            payload = {"version": version, "history": pointer.history, "updated_at": utc_now()}
            write_atomic(self.model_path(name) / POINTER, json.dumps(payload).encode())
            if self.shadow(name) == version:  # promoted: it no longer answers beside the serving version
                (self.model_path(name) / SHADOW_POINTER).unlink(missing_ok=True)
        log.info("%s now serves version %d", name, version)
        return pointer

    # The shadow pointer: a version that answers beside the serving one, to be compared with it

    def shadow(self, name: str) -> int | None:
        try:
            return int(json.loads((self.model_path(name) / SHADOW_POINTER).read_text())["version"])
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as error:
            log.warning("unreadable shadow pointer of %s: %s", name, error)
            return None

    def shadow_stamp(self, name: str) -> tuple[int, int] | None:
        return _file_stamp(self.model_path(name) / SHADOW_POINTER)

    def set_shadow(self, name: str, version: int) -> None:
        """Make `version` (which must exist and verify) the shadow; atomic."""
        self.read_version(name, version)
        with self.lock(name):
            payload = {"version": version, "updated_at": utc_now()}
            write_atomic(self.model_path(name) / SHADOW_POINTER, json.dumps(payload).encode())
        log.info("%s version %d now answers in shadow", name, version)

    def clear_shadow(self, name: str) -> bool:
        """End the shadow; False if there was none."""
        with self.lock(name):
            try:
                (self.model_path(name) / SHADOW_POINTER).unlink()
            except FileNotFoundError:
                return False
        log.info("%s has no shadow any more", name)
        return True

    def shared_file(self, name: str, filename: str) -> Path:
        """A file kept beside a model's versions (e.g. the fixed hold-out set)."""
        return self.model_path(name) / filename
