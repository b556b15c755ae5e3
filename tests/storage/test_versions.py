import json
import os
from pathlib import Path

import pytest

from prediction_service.core.errors import NotFound
from prediction_service.storage.layout import POINTER
from prediction_service.storage.versions import MANIFEST, CorruptVersion, ModelStore


def write_model(text: str):
    return lambda folder: (folder / "model.bin").write_text(text)


def test_versions_count_up_from_one_with_a_full_manifest(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    first = store.add_version("m", write_model("a"), {"metrics": {"accuracy": 0.9}})
    second = store.add_version("m", write_model("b"), {"metrics": {"accuracy": 0.95}})
    assert (first.version, second.version) == (1, 2)
    manifest = json.loads((tmp_path / "m" / "2" / MANIFEST).read_text())
    assert manifest["version"] == 2
    assert manifest["metrics"] == {"accuracy": 0.95}
    assert manifest["created_at"]
    assert set(manifest["files"]) == {"model.bin"}
    assert len(manifest["files"]["model.bin"]["sha256"]) == 64
    assert store.version_numbers("m") == [1, 2]


def test_a_new_version_does_not_serve_until_the_pointer_moves(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    store.add_version("m", write_model("a"), {})
    assert store.serving("m") is None
    store.set_serving("m", 1)
    store.add_version("m", write_model("b"), {})
    assert store.serving("m").version == 1
    pointer = store.set_serving("m", 2)
    assert pointer.version == 2
    assert pointer.history == [1]
    assert json.loads((tmp_path / "m" / POINTER).read_text())["version"] == 2


def test_a_failed_write_leaves_no_version_and_no_temporary_folder(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)

    def crash(folder: Path) -> None:
        (folder / "model.bin").write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        store.add_version("m", crash, {})
    assert store.version_numbers("m") == []
    assert [entry.name for entry in (tmp_path / "m").iterdir() if not entry.name.endswith(".lock")] == []


def test_half_written_folders_are_not_versions(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    store.add_version("m", write_model("a"), {})
    (tmp_path / "m" / ".tmp-deadbeef").mkdir()  # a writer died before its rename
    assert store.version_numbers("m") == [1]
    assert store.remove_partial_versions("m") == [".tmp-deadbeef"]
    assert not (tmp_path / "m" / ".tmp-deadbeef").exists()


def test_tampered_or_truncated_artifacts_are_detected(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    stored = store.add_version("m", write_model("weights"), {})
    assert store.read_version("m", 1).version == 1
    (stored.path / "model.bin").write_text("weig")
    with pytest.raises(CorruptVersion, match="does not match"):
        store.read_version("m", 1)


def test_a_version_without_manifest_is_corrupt(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    stored = store.add_version("m", write_model("weights"), {})
    os.remove(stored.path / MANIFEST)
    with pytest.raises(CorruptVersion, match="manifest"):
        store.read_version("m", 1)
    assert store.list_versions("m") == []


def test_activating_a_missing_version_is_not_found(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    with pytest.raises(NotFound, match="no version 7"):
        store.set_serving("m", 7)


def test_a_pointer_falls_back_through_its_history(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    for text in "abc":
        store.add_version("m", write_model(text), {})
    store.set_serving("m", 1)
    store.set_serving("m", 3)
    store.set_serving("m", 2)
    assert list(store.serving("m").candidates()) == [2, 3, 1]
