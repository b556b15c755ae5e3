"""Uploaded training sets, decoded and kept on disk under names the service makes."""

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
from prediction_service.storage.layout import DATASET, INCOMING_PREFIX, MANIFEST, STAGING_PREFIX

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
    def __init__(self, root: Path) -> None:
        self.root = root

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
        """Write the dataset and its manifest to a temporary folder, fsync, rename into place."""
        with staged_folder(self.root, STAGING_PREFIX) as staging:
            buffer = io.BytesIO()
            np.savez(buffer, inputs=data.inputs, labels=data.labels)
            (staging / DATASET).write_bytes(buffer.getbuffer())
            (staging / MANIFEST).write_text(json.dumps(manifest, indent=2))
            publish_folder(staging, self.root / upload_id)

    def load(self, upload_id: str) -> tuple[np.ndarray, np.ndarray]:
        path = self.root / upload_id / DATASET
        if not path.is_file():
            raise NotFound(f"the upload {upload_id} is missing from {self.root}")
        with np.load(path, allow_pickle=False) as data:
            # Uploads stored before uploads took any model's inputs named them `images`.
            inputs = data["inputs"] if "inputs" in data.files else data["images"]
            return inputs, data["labels"]

    def remove(self, upload_id: str) -> None:
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
        removed = []
        if self.root.is_dir():
            cutoff = time.time() - ORPHAN_AGE_SECONDS
            for entry in self.root.iterdir():
                if entry.name.startswith(".") or entry.name in referenced or not entry.is_dir():
                    continue
                if entry.stat().st_mtime < cutoff:
                    shutil.rmtree(entry, ignore_errors=True)
                    removed.append(entry.name)
        return removed
