"""Versioned model artifacts (names: storage.layout).

A version folder appears by an atomic rename of a fully written, fsynced
temporary folder, and the serving pointer changes only after that, so a crash at
any point leaves either the old state or the new one.

Where versions live: MODEL_DIR (embedded), or an object store (MODEL_STORE_URL) with
MODEL_DIR as each process's cache. In the object store a version is its files, stored
under their sha256, then its manifest, written last and only if absent: the manifest is
what makes a version exist, and a number is never taken twice. A process pulls a version
into a temporary folder of its cache, checks every file's hash, then renames it into place,
so what it loads is always whole.
"""

import hashlib
import json
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from filelock import FileLock

from prediction_service.core.errors import Conflict, NotFound
from prediction_service.core.files import publish_folder, staged_folder, write_atomic
from prediction_service.storage.layout import MANIFEST, STAGING_PREFIX, Layout, ObjectLayout
from prediction_service.storage.objects import MissingObject, ObjectStore
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


def _full_manifest(name: str, version: int, manifest: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "version": version, "created_at": utc_now(), **manifest}


def _parse_manifest(name: str, version: int, data: bytes | str) -> dict[str, Any]:
    try:
        manifest = json.loads(data)
        if not isinstance(manifest["files"], dict):
            raise TypeError("files is not an object")
        for filename in manifest["files"]:  # plain names: a manifest never writes outside its folder
            if not filename or Path(filename).name != filename or filename.startswith("."):
                raise ValueError(f"bad file name {filename!r}")
    except (ValueError, KeyError, TypeError) as error:
        raise CorruptVersion(f"{name} version {version} is damaged: unreadable manifest ({error})") from error
    return dict(manifest)


def _into_cache(staging: Path, final: Path) -> None:
    """Rename a verified version into the cache; if another process of this host got there first, theirs
    is the same immutable version."""
    try:
        publish_folder(staging, final)
    except OSError:
        if not final.is_dir():
            raise
        shutil.rmtree(staging, ignore_errors=True)


def _read_manifest(name: str, version: int, path: Path) -> dict[str, Any]:
    try:
        data = path.read_text()
    except OSError as error:
        raise CorruptVersion(f"{name} version {version} is damaged: unreadable manifest ({error})") from error
    return _parse_manifest(name, version, data)


def _verify(name: str, version: int, folder: Path, files: dict[str, Any]) -> None:
    """Every file of the manifest is in `folder` with its hash."""
    for filename, expected in files.items():
        file_path = folder / filename
        if not file_path.is_file() or sha256_file(file_path) != expected["sha256"]:
            raise CorruptVersion(
                f"{name} version {version} is damaged: {filename} is missing or does not match its manifest"
            )


# A file in the object store that no manifest names is left by a writer that died once it is this old
# (a version's files are uploaded seconds before its manifest).
ORPHAN_FILE_AGE_SECONDS = 3600.0
# Attempts at the next free version number when other writers keep taking it first.
PUBLISH_ATTEMPTS = 20


class ModelStore:
    def __init__(self, root: Path, objects: ObjectStore | None = None, pointers: Pointers | None = None) -> None:
        """`objects`: where versions and shared files live (MODEL_DIR is then their cache; None: MODEL_DIR);
        `pointers`: where the serving and shadow pointers live (None: files in `root`)."""
        self.layout = Layout(root)
        self.objects = objects
        self.pointers = pointers or FilePointers(self.layout, self.lock)

    def model_path(self, name: str) -> Path:
        return self.layout.model(name)

    def lock(self, name: str, purpose: str = "versions") -> FileLock:
        """A lock shared by every process using this MODEL_DIR (released if the holder dies)."""
        self.model_path(name).mkdir(parents=True, exist_ok=True)
        return FileLock(self.layout.lock(name, purpose))

    # Versions

    def version_numbers(self, name: str) -> list[int]:
        if self.objects is not None:
            manifests = ObjectLayout.manifests(name)
            numbers = (key[len(manifests) : -len(".json")] for key in self.objects.keys(manifests))
            return sorted(int(number) for number in numbers if number.isdigit())
        path = self.model_path(name)
        if not path.is_dir():
            return []
        return sorted(int(entry.name) for entry in path.iterdir() if entry.name.isdigit() and entry.is_dir())

    def read_version(self, name: str, version: int, verify: bool = True) -> StoredVersion:
        """The version's manifest; with `verify`, also check every file against its hash (from an object
        store: the verified copy in the cache, pulled first if it is not there)."""
        path = self.model_path(name) / str(version)
        if self.objects is not None and not path.is_dir():
            if not verify:
                return StoredVersion(name, version, path, self._remote_manifest(name, version))
            self._pull(name, version)
        if not path.is_dir():
            raise NotFound(f"model {name!r} has no version {version}; GET /models lists the versions")
        manifest = _read_manifest(name, version, path / MANIFEST)
        if verify:
            try:
                _verify(name, version, path, manifest["files"])
            except CorruptVersion:
                if self.objects is None:
                    raise
                log.warning("the cached %s version %d is damaged: pulling it again", name, version)
                shutil.rmtree(path, ignore_errors=True)
                self._pull(name, version)
                manifest = _read_manifest(name, version, path / MANIFEST)
        return StoredVersion(name, version, path, manifest)

    def _remote_manifest(self, name: str, version: int) -> dict[str, Any]:
        assert self.objects is not None
        try:
            data = self.objects.get(ObjectLayout.manifest(name, version))
        except MissingObject:
            raise NotFound(f"model {name!r} has no version {version}; GET /models lists the versions") from None
        return _parse_manifest(name, version, data)

    def _pull(self, name: str, version: int) -> None:
        """Download a version into a temporary folder of the cache, check every file, then rename it into
        place: a corrupt or partial download never becomes visible."""
        assert self.objects is not None
        manifest = self._remote_manifest(name, version)
        model_path = self.model_path(name)
        with staged_folder(model_path, STAGING_PREFIX) as staging:
            for filename, expected in manifest["files"].items():
                try:
                    self.objects.download(ObjectLayout.file(name, expected["sha256"]), staging / filename)
                except MissingObject:
                    raise CorruptVersion(f"{name} version {version} is damaged: {filename} is missing") from None
            _verify(name, version, staging, manifest["files"])
            (staging / MANIFEST).write_text(json.dumps(manifest, indent=2, default=str))
            _into_cache(staging, model_path / str(version))
        log.info("pulled %s version %d into the cache", name, version)

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
            if self.objects is not None:
                version, full_manifest = self._publish(name, staging, {**manifest, "files": files})
                (staging / MANIFEST).write_text(json.dumps(full_manifest, indent=2, default=str))
                final = model_path / str(version)
                _into_cache(staging, final)  # the files just published: no need to pull them again
            else:
                with self.lock(name):
                    version = max(self.version_numbers(name), default=0) + 1
                    full_manifest = _full_manifest(name, version, {**manifest, "files": files})
                    (staging / MANIFEST).write_text(json.dumps(full_manifest, indent=2, default=str))
                    final = model_path / str(version)
                    publish_folder(staging, final)
        log.info("stored %s version %d", name, version)
        return StoredVersion(name, version, final, full_manifest)

    def _publish(self, name: str, staging: Path, manifest: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """Upload the files, then create the manifest of the next free number only if it is absent: of two
        writers of one number exactly one succeeds; the other takes the next number (its files, stored
        under their hashes, are already there)."""
        assert self.objects is not None
        for filename, described in manifest["files"].items():
            self.objects.upload(ObjectLayout.file(name, described["sha256"]), staging / filename)
        version = max(self.version_numbers(name), default=0) + 1
        for _ in range(PUBLISH_ATTEMPTS):
            full_manifest = _full_manifest(name, version, manifest)
            data = json.dumps(full_manifest, indent=2, default=str).encode()
            if self.objects.put_new(ObjectLayout.manifest(name, version), data):
                return version, full_manifest
            log.info("%s version %d was taken by another writer; trying the next number", name, version)
            version = max([version, *self.version_numbers(name)]) + 1
        raise Conflict(f"could not claim a version number of {name} after {PUBLISH_ATTEMPTS} attempts; retry")

    def remove_partial_versions(self, name: str) -> list[str]:
        """Delete temporary folders left by a writer that died (call with no writer running), and in an object
        store the files of versions whose manifest never came (old enough that no writer is still at it)."""
        path = self.model_path(name)
        removed = []
        if path.is_dir():
            for entry in path.iterdir():
                if entry.name.startswith(STAGING_PREFIX) and entry.is_dir():
                    shutil.rmtree(entry, ignore_errors=True)
                    removed.append(entry.name)
        if self.objects is not None:
            removed += self._remove_orphan_files(name)
        return removed

    def _remove_orphan_files(self, name: str) -> list[str]:
        assert self.objects is not None
        named = {
            ObjectLayout.file(name, described["sha256"])
            for number in self.version_numbers(name)
            for described in self._remote_manifest(name, number)["files"].values()
        }
        cutoff = time.time() - ORPHAN_FILE_AGE_SECONDS
        orphans = [
            key
            for key, modified in self.objects.keys(ObjectLayout.files(name)).items()
            if key not in named and modified < cutoff
        ]
        self.objects.delete(orphans)
        return orphans

    # The pointers (storage.pointers): a version must exist and verify before one names it

    def serving(self, name: str) -> ServingPointer | None:
        return self.pointers.serving(name)

    def pointer_stamp(self, name: str) -> Stamp:
        """Cheap change detector for the serving pointer (no I/O but a stat), as of the last `check_stamps`."""
        return self.pointers.pointer_stamp(name)

    def check_stamps(self) -> None:
        """Read where every pointer stands now (I/O), for the stamps."""
        self.pointers.check_stamps()

    def _pointable(self, name: str, version: int) -> None:
        """Refuse to point at a version this process could not load, or (with an object store) one the other
        processes could not pull: a cached copy here is not enough while the store is away (StoreUnavailable)."""
        self.read_version(name, version)
        if self.objects is not None:
            self._remote_manifest(name, version)

    def set_serving(self, name: str, version: int) -> ServingPointer:
        """Point the model at `version` (which must exist and verify); atomic. Ends its shadow if it was `version`."""
        self._pointable(name, version)
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
        self._pointable(name, version)
        self.pointers.set_shadow(name, version)
        log.info("%s version %d now answers in shadow", name, version)

    def clear_shadow(self, name: str) -> bool:
        """End the shadow; False if there was none."""
        if not self.pointers.clear_shadow(name):
            return False
        log.info("%s has no shadow any more", name)
        return True

    def shared_file(self, name: str, filename: str) -> Path | None:
        """A local copy of a file kept beside a model's versions (e.g. the fixed hold-out set); None if there is
        none. From an object store it is downloaded (whole, then renamed) at every call: it can be replaced."""
        path = self.model_path(name) / filename
        if self.objects is not None:
            try:
                data = self.objects.get(ObjectLayout.shared(name, filename))
            except MissingObject:
                return None
            write_atomic(path, data)
        return path if path.is_file() else None

    def write_shared(self, name: str, filename: str, data: bytes) -> None:
        """Keep (or replace) a file beside a model's versions; readers see the old content or the new one."""
        if self.objects is not None:
            self.objects.put(ObjectLayout.shared(name, filename), data)
        write_atomic(self.model_path(name) / filename, data)
