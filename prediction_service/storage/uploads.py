"""Uploaded training sets, decoded and kept under names the service makes: on disk, or in an object store
(MODEL_STORE_URL), where the dataset is one object written whole and its manifest follows it."""

import io
import json
import shutil
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from prediction_service.core.errors import NotFound
from prediction_service.core.files import publish_folder, staged_folder
from prediction_service.storage.layout import DATASET, INCOMING_PREFIX, MANIFEST, STAGING_PREFIX, ObjectLayout
from prediction_service.storage.objects import MissingObject, ObjectStore

# An upload folder no job names is an orphan (its process died between saving it and recording its job) once it is
# this old: a writer records the job a moment after the save, so a younger one may be another process's, mid-intake.
ORPHAN_AGE_SECONDS = 60.0


class Dataset(Protocol):
    """Labelled examples of any shape: `inputs[i]` (an image, a row of measurements) has label `labels[i]`."""

    @property
    def inputs(self) -> np.ndarray: ...

    @property
    def labels(self) -> np.ndarray: ...


class UploadStore:
    def __init__(self, root: Path, objects: ObjectStore | None = None) -> None:
        """`root`: the uploads' folder (with `objects`: only where received zips wait while they are checked)."""
        self.root = root
        self.objects = objects

    @contextmanager
    def incoming(self) -> Iterator[Path]:
        """A path, named by the service, to put a received zip while it is checked; removed afterwards."""
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.root / f"{INCOMING_PREFIX}{uuid.uuid4().hex}.zip"
        try:
            yield path
        finally:
            path.unlink(missing_ok=True)

    def save(self, upload_id: str, data: Dataset, manifest: dict[str, Any]) -> None:
        """Write the dataset and its manifest to a temporary folder, fsync, rename into place (in an object
        store: the dataset, then the manifest, each object whole)."""
        buffer = io.BytesIO()
        np.savez(buffer, inputs=data.inputs, labels=data.labels)
        described = json.dumps(manifest, indent=2).encode()
        if self.objects is not None:
            self.objects.put(ObjectLayout.upload(upload_id, DATASET), buffer.getvalue())
            self.objects.put(ObjectLayout.upload(upload_id, MANIFEST), described)
            return
        with staged_folder(self.root, STAGING_PREFIX) as staging:
            (staging / DATASET).write_bytes(buffer.getbuffer())
            (staging / MANIFEST).write_bytes(described)
            publish_folder(staging, self.root / upload_id)

    def load(self, upload_id: str) -> tuple[np.ndarray, np.ndarray]:
        missing = NotFound(f"the upload {upload_id} is missing from {self.objects.url if self.objects else self.root}")
        source: Path | io.BytesIO
        if self.objects is not None:
            try:
                source = io.BytesIO(self.objects.get(ObjectLayout.upload(upload_id, DATASET)))
            except MissingObject:
                raise missing from None
        else:
            source = self.root / upload_id / DATASET
            if not source.is_file():
                raise missing
        with np.load(source, allow_pickle=False) as data:
            # Uploads stored before uploads took any model's inputs named them `images`.
            inputs = data["inputs"] if "inputs" in data.files else data["images"]
            return inputs, data["labels"]

    def remove(self, upload_id: str) -> None:
        if self.objects is not None:
            self.objects.delete(list(self.objects.keys(ObjectLayout.upload(upload_id, ""))))
            return
        shutil.rmtree(self.root / upload_id, ignore_errors=True)

    def remove_partial(self) -> None:
        """Delete folders of uploads that were being written when a process died."""
        if self.root.is_dir():
            for entry in self.root.iterdir():
                if entry.name.startswith(STAGING_PREFIX):
                    shutil.rmtree(entry, ignore_errors=True)
                elif entry.name.startswith(INCOMING_PREFIX):
                    entry.unlink(missing_ok=True)

    def remove_orphans(self, referenced: set[str]) -> list[str]:
        """Delete upload folders older than ORPHAN_AGE_SECONDS whose id is not in `referenced`; their names."""
        removed: list[str] = []
        cutoff = time.time() - ORPHAN_AGE_SECONDS
        if self.objects is not None:
            newest: dict[str, float] = {}
            for key, modified in self.objects.keys(ObjectLayout.UPLOADS).items():
                upload_id = key[len(ObjectLayout.UPLOADS) :].split("/", 1)[0]
                newest[upload_id] = max(newest.get(upload_id, 0.0), modified)
            for upload_id, modified in sorted(newest.items()):
                if upload_id not in referenced and modified < cutoff:
                    self.remove(upload_id)
                    removed.append(upload_id)
            return removed
        if self.root.is_dir():
            for entry in self.root.iterdir():
                if entry.name.startswith(".") or entry.name in referenced or not entry.is_dir():
                    continue
                if entry.stat().st_mtime < cutoff:
                    shutil.rmtree(entry, ignore_errors=True)
                    removed.append(entry.name)
        return removed
