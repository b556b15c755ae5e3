"""Versioned model artifacts on disk (names: storage.layout).

A version folder appears by an atomic rename of a fully written, fsynced
temporary folder, and the serving pointer changes only after that, so a crash at
any point leaves either the old state or the new one.
"""

import hashlib
import json
import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from filelock import FileLock

from prediction_service.core.errors import Conflict, NotFound
from prediction_service.core.files import publish_folder, staged_folder
from prediction_service.storage.layout import MANIFEST, STAGING_PREFIX, Layout
from prediction_service.storage.pointers import FilePointers, Pointers, ServingPointer, Stamp, utc_now

log = logging.getLogger(__name__)


class CorruptVersion(Conflict):
    """A version folder that is incomplete or whose files do not match its manifest."""


@dataclass(frozen=True)
class StoredVersion:
    name: str
    version: int
    path: Path
    manifest: dict[str, Any]


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class ModelStore:
    def __init__(self, root: Path, pointers: Pointers | None = None) -> None:
        """`pointers`: where the serving and shadow pointers live (None: files in `root`)."""
        self.layout = Layout(root)
        self.pointers = pointers or FilePointers(self.layout, self.lock)

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

    # The pointers (storage.pointers): a version must exist and verify before one names it

    def serving(self, name: str) -> ServingPointer | None:
        return self.pointers.serving(name)

    def pointer_stamp(self, name: str) -> Stamp:
        """Cheap change detector for the serving pointer (no I/O but a stat), as of the last `check_stamps`."""
        return self.pointers.pointer_stamp(name)

    def check_stamps(self) -> None:
        """Read where every pointer stands now (I/O), for the stamps."""
        self.pointers.check_stamps()

    def set_serving(self, name: str, version: int) -> ServingPointer:
        """Point the model at `version` (which must exist and verify); atomic. Ends its shadow if it was `version`."""
        self.read_version(name, version)
        pointer = self.pointers.set_serving(name, version)
        log.info("%s now serves version %d", name, version)
        return pointer

    # The shadow pointer: a version that answers beside the serving one, to be compared with it

    def shadow(self, name: str) -> int | None:
        return self.pointers.shadow(name)

    def shadow_stamp(self, name: str) -> Stamp:
        return self.pointers.shadow_stamp(name)

    def set_shadow(self, name: str, version: int) -> None:
        """Make `version` (which must exist and verify) the shadow; atomic."""
        self.read_version(name, version)
        self.pointers.set_shadow(name, version)
        log.info("%s version %d now answers in shadow", name, version)

    def clear_shadow(self, name: str) -> bool:
        """End the shadow; False if there was none."""
        if not self.pointers.clear_shadow(name):
            return False
        log.info("%s has no shadow any more", name)
        return True

    def shared_file(self, name: str, filename: str) -> Path:
        """A file kept beside a model's versions (e.g. the fixed hold-out set)."""
        return self.model_path(name) / filename
