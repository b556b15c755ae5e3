"""Versions, shared files and uploads in a real S3-compatible store (SeaweedFS), MODEL_DIR as each process's cache."""

import json
import threading
from pathlib import Path

import numpy as np
import pytest

from prediction_service.core.errors import NotFound
from prediction_service.retraining.penguin_rows import LabelledRows
from prediction_service.storage.layout import MANIFEST, ObjectLayout
from prediction_service.storage.objects import ObjectStore, StoreUnavailable
from prediction_service.storage.uploads import UploadStore
from prediction_service.storage.versions import CorruptVersion, ModelStore


def write_model(text: str):
    return lambda folder: (folder / "model.bin").write_text(text)


def replica(tmp_path: Path, s3_url: str, name: str) -> ModelStore:
    """A process on a host of its own: its own cache, the shared object store."""
    return ModelStore(tmp_path / name, ObjectStore(s3_url))


def test_a_version_published_to_the_store_is_read_back_through_another_cache(tmp_path: Path, s3_url: str) -> None:
    writer = replica(tmp_path, s3_url, "writer")
    stored = writer.add_version("m", write_model("weights"), {"metrics": {"accuracy": 0.9}})
    assert stored.version == 1

    reader = replica(tmp_path, s3_url, "reader")
    assert reader.version_numbers("m") == [1]
    assert reader.list_versions("m")[0].manifest["metrics"] == {"accuracy": 0.9}
    assert not (tmp_path / "reader" / "m" / "1").exists()  # a manifest alone downloads no files

    read = reader.read_version("m", 1)
    assert (read.path / "model.bin").read_text() == "weights"
    assert read.manifest["files"] == stored.manifest["files"]
    assert json.loads((read.path / MANIFEST).read_text())["version"] == 1

    # Cached and verified: not downloaded again.
    downloads: list[str] = []
    assert reader.objects is not None
    reader.objects.download = lambda key, path: downloads.append(key)  # type: ignore[method-assign]
    assert (reader.read_version("m", 1).path / "model.bin").read_text() == "weights"
    assert downloads == []
    with pytest.raises(NotFound):
        reader.read_version("m", 2)


def test_a_corrupted_object_is_refused_and_never_lands_in_the_cache(tmp_path: Path, s3_url: str) -> None:
    writer = replica(tmp_path, s3_url, "writer")
    stored = writer.add_version("m", write_model("weights"), {})
    objects = ObjectStore(s3_url)
    objects.put(ObjectLayout.file("m", stored.manifest["files"]["model.bin"]["sha256"]), b"weigths")

    reader = replica(tmp_path, s3_url, "reader")
    with pytest.raises(CorruptVersion, match=r"model\.bin is missing or does not match its manifest"):
        reader.read_version("m", 1)
    assert sorted(path.name for path in (tmp_path / "reader" / "m").iterdir()) == []  # nothing half-there

    # A damaged copy in a cache is pulled again (here: still corrupt in the store, so still refused).
    (writer.model_path("m") / "1" / "model.bin").write_text("rotten")
    with pytest.raises(CorruptVersion):
        writer.read_version("m", 1)
    assert not (writer.model_path("m") / "1").exists()


def test_a_damaged_cache_is_repaired_from_the_store(tmp_path: Path, s3_url: str) -> None:
    store = replica(tmp_path, s3_url, "one")
    stored = store.add_version("m", write_model("weights"), {})
    (stored.path / "model.bin").write_text("rotten")
    assert (store.read_version("m", 1).path / "model.bin").read_text() == "weights"


def test_two_writers_racing_for_one_version_number_exactly_one_wins(tmp_path: Path, s3_url: str) -> None:
    """Both read the same free number; the manifest's conditional write lets one have it, the other takes the next."""
    writers = [replica(tmp_path, s3_url, f"writer{index}") for index in range(2)]
    barrier = threading.Barrier(2)
    for store in writers:
        assert store.objects is not None
        put_new = store.objects.put_new

        def together(key: str, data: bytes, put_new=put_new) -> bool:
            if key.endswith("/1.json"):
                barrier.wait(10)  # both hold number 1 and write its manifest at once
            return put_new(key, data)

        store.objects.put_new = together  # type: ignore[method-assign]
    results: dict[int, int] = {}

    def write(index: int) -> None:
        results[index] = writers[index].add_version("m", write_model(f"writer {index}"), {"writer": index}).version

    threads = [threading.Thread(target=write, args=(index,)) for index in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(results.values()) == [1, 2]
    reader = replica(tmp_path, s3_url, "reader")
    assert reader.version_numbers("m") == [1, 2]
    for index, version in results.items():  # each number holds its own writer's files
        read = reader.read_version("m", version)
        assert read.manifest["writer"] == index
        assert (read.path / "model.bin").read_text() == f"writer {index}"


def test_the_store_refuses_a_second_manifest_of_one_number(s3_url: str) -> None:
    """SeaweedFS honours If-None-Match: * on PUT (what makes a number impossible to take twice)."""
    objects = ObjectStore(s3_url)
    assert objects.put_new("m/versions/1.json", b"first")
    assert not objects.put_new("m/versions/1.json", b"second")
    assert objects.get("m/versions/1.json") == b"first"


def test_files_of_a_writer_that_died_before_its_manifest_are_not_a_version(tmp_path: Path, s3_url: str) -> None:
    store = replica(tmp_path, s3_url, "one")
    store.add_version("m", write_model("kept"), {})
    assert store.objects is not None
    store.objects.put(ObjectLayout.file("m", "0" * 64), b"orphan")
    assert store.version_numbers("m") == [1]
    assert store.remove_partial_versions("m") == []  # young: a writer may still be at it
    import prediction_service.storage.versions as versions

    versions_age = versions.ORPHAN_FILE_AGE_SECONDS
    try:
        versions.ORPHAN_FILE_AGE_SECONDS = -1.0
        assert store.remove_partial_versions("m") == [ObjectLayout.file("m", "0" * 64)]
    finally:
        versions.ORPHAN_FILE_AGE_SECONDS = versions_age
    assert (replica(tmp_path, s3_url, "other").read_version("m", 1).path / "model.bin").read_text() == "kept"


def test_shared_files_are_kept_in_the_store(tmp_path: Path, s3_url: str) -> None:
    writer = replica(tmp_path, s3_url, "writer")
    assert writer.shared_file("m", "holdout.npz") is None
    writer.write_shared("m", "holdout.npz", b"hold-out")
    path = replica(tmp_path, s3_url, "reader").shared_file("m", "holdout.npz")
    assert path is not None
    assert path.read_bytes() == b"hold-out"


def test_uploads_are_saved_loaded_and_removed_in_the_store(tmp_path: Path, s3_url: str) -> None:
    rows = LabelledRows(np.array([[39.1, 181.0], [46.5, 195.0]]), np.array([0, 1], np.uint8), ["Adelie", "Chinstrap"])
    upload_id = "a" * 32
    UploadStore(tmp_path / "api" / "uploads", ObjectStore(s3_url)).save(upload_id, rows, {"id": upload_id})
    assert not (tmp_path / "api" / "uploads").exists()  # nothing on the API host's disk

    worker = UploadStore(tmp_path / "worker" / "uploads", ObjectStore(s3_url))
    inputs, labels = worker.load(upload_id)
    assert inputs.tolist() == [[39.1, 181.0], [46.5, 195.0]]
    assert labels.tolist() == [0, 1]
    assert worker.remove_orphans({upload_id}) == []
    worker.remove(upload_id)
    with pytest.raises(NotFound, match=f"the upload {upload_id} is missing"):
        worker.load(upload_id)


def test_an_unreachable_store_is_a_503_with_retry_after(tmp_path: Path, s3_url: str, monkeypatch) -> None:
    from servers import free_port

    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")  # nobody listens
    store = ModelStore(tmp_path, ObjectStore(s3_url))
    with pytest.raises(StoreUnavailable) as raised:
        store.add_version("m", write_model("weights"), {})
    assert raised.value.status_code == 503
    assert raised.value.headers["Retry-After"]
    assert "unreachable" in raised.value.detail
    assert [entry.name for entry in (tmp_path / "m").iterdir()] == []  # nothing half-written in the cache


def test_no_pointer_moves_to_a_cached_version_while_the_store_is_away(tmp_path: Path, s3_url: str, monkeypatch) -> None:
    """The other replicas could not pull it: the activation is refused whole (503), not half-done."""
    from servers import free_port

    replica(tmp_path, s3_url, "api").add_version("m", write_model("weights"), {})  # cached in "api" too
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")  # the store went away
    cut_off = replica(tmp_path, s3_url, "api")
    for point in (cut_off.set_serving, cut_off.set_shadow):
        with pytest.raises(StoreUnavailable):
            point("m", 1)
    assert cut_off.serving("m") is None
    assert cut_off.shadow("m") is None
