"""The models in memory: name -> the version that serves, loaded before it is seen.

A swap loads the new version completely (and warms it up) while the old one
keeps answering, then replaces one dictionary entry; a request reads that entry
once, so it sees either the old model or the new one, never a mix. Every worker
process polls the store's serving pointers (`refresh`) so that all of them serve
the version the pointer names, whichever process moved it.
"""

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from prediction_service.core import metrics
from prediction_service.core.errors import ModelUnavailable, NotFound
from prediction_service.models.catalog import ModelKind
from prediction_service.models.mnist.dataset import MnistUnavailable
from prediction_service.storage.versions import CorruptVersion, ModelStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServedModel:
    name: str
    version: int
    manifest: dict[str, Any]
    predictor: Any


@dataclass
class ModelStatus:
    state: str = "loading"  # loading | training | ready | unavailable | failed
    reason: str | None = None
    fix: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        shown = {"state": self.state, "reason": self.reason, "fix": self.fix}
        return {key: value for key, value in shown.items() if value is not None}


class NoUsableVersion(Exception):
    pass


class Registry:
    def __init__(self, store: ModelStore, kinds: list[ModelKind], after_swap: Callable[[], None] | None = None) -> None:
        self.store = store
        self._after_swap = after_swap or (lambda: None)
        self.kinds = {kind.name: kind for kind in kinds}
        self._served: dict[str, ServedModel] = {}
        self._status = {name: ModelStatus() for name in self.kinds}
        self._stamps: dict[str, tuple[int, int] | None] = {}
        self._load_locks = {name: threading.Lock() for name in self.kinds}

    # Reading (request path)

    def get(self, name: str) -> ServedModel:
        served = self._served.get(name)
        if served is None:
            if name not in self.kinds:
                raise NotFound(f"there is no model {name!r}; models: {', '.join(self.kinds)}")
            raise ModelUnavailable(self._unavailable_message(name), retry_after=self._retry_after(name))
        return served

    def status(self, name: str) -> ModelStatus:
        return self._status[name]

    def serving_version(self, name: str) -> int | None:
        served = self._served.get(name)
        return served.version if served else None

    def ready(self) -> bool:
        return all(status.state == "ready" for status in self._status.values())

    def _unavailable_message(self, name: str) -> str:
        status = self._status[name]
        if status.state in ("loading", "training"):
            return f"model {name!r} is still {status.state}; retry in a few seconds (GET /health/ready tells)"
        message = f"model {name!r} is unavailable: {status.reason or status.state}"
        return f"{message}; fix: {status.fix}" if status.fix else message

    def _retry_after(self, name: str) -> int | None:
        return 5 if self._status[name].state in ("loading", "training") else None

    # Loading (start-up, hot reload)

    def start(self) -> None:
        """Load every model's serving version, training the first one where the store has none.

        Blocking: run it in a thread. Several processes may run it at once on one store.
        """
        for kind in self.kinds.values():
            try:
                self._ensure_first_version(kind)
                self._load_serving(kind)
            except MnistUnavailable as error:
                log.error("%s", error.detail)
                self._status[kind.name] = ModelStatus("unavailable", reason=error.reason, fix=error.fix)
            except Exception as error:
                log.exception("model %s failed to load", kind.name)
                self._status[kind.name] = ModelStatus("failed", reason=str(error))

    def _ensure_first_version(self, kind: ModelKind) -> None:
        if self.store.serving(kind.name) is not None:
            return
        # One process trains; the others wait here, then find the pointer set.
        with self.store.lock(kind.name, "first-training"):
            if self.store.serving(kind.name) is not None:
                return
            initial = [v for v in self.store.list_versions(kind.name) if v.manifest.get("source") == "initial training"]
            if initial:  # trained before, but the process died before pointing at it
                version = initial[-1].version
            else:
                self._status[kind.name] = ModelStatus("training")
                version = kind.train_first_version(self.store).version
            self.store.set_serving(kind.name, version)

    def _load_serving(self, kind: ModelKind) -> None:
        stamp = self.store.pointer_stamp(kind.name)
        pointer = self.store.serving(kind.name)
        if pointer is None:
            raise NoUsableVersion(f"{kind.name} has no serving version")
        current = self._served.get(kind.name)
        for version in pointer.candidates():
            if current is not None and current.version == version:
                self._stamps[kind.name] = stamp
                return
            try:
                stored = self.store.read_version(kind.name, version)
                predictor = kind.load(stored)
            except (CorruptVersion, NotFound, OSError, ValueError) as error:
                log.warning("skipping %s version %d: %s", kind.name, version, getattr(error, "detail", error))
                continue
            replaced = self._served.get(kind.name)
            self._served[kind.name] = ServedModel(kind.name, version, stored.manifest, predictor)
            metrics.SERVING_VERSION.labels(kind.name).set(version)
            self._status[kind.name] = ModelStatus("ready")
            self._stamps[kind.name] = stamp
            log.info("%s serves version %d", kind.name, version)
            if replaced is not None:
                del replaced
                self._after_swap()
            return
        raise NoUsableVersion(f"no version of {kind.name} in the serving history loads: {list(pointer.candidates())}")

    def refresh(self) -> None:
        """Serve what the store's pointers name now (cheap when nothing changed)."""
        for name in self.kinds:
            self.refresh_model(name)

    def pointer_changed(self, name: str) -> bool:
        """Whether the store names another serving version than the one loaded here (a stat)."""
        return self._status[name].state == "ready" and self.store.pointer_stamp(name) != self._stamps.get(name)

    def refresh_model(self, name: str) -> None:
        """Load the version the pointer names, if it changed since the last look (a stat otherwise)."""
        if not self.pointer_changed(name):
            return
        with self._load_locks[name]:  # one loader per model; others find the work done
            stamp = self.store.pointer_stamp(name)
            if stamp == self._stamps.get(name):
                return
            try:
                self._load_serving(self.kinds[name])
            except NoUsableVersion as error:
                log.error("%s; still serving the previous version", error)
                self._stamps[name] = stamp

    def activate(self, name: str, version: int) -> ServedModel:
        """Serve `version` of `name` here now, and in every other process at its next refresh."""
        kind = self.kinds.get(name)
        if kind is None:
            raise NotFound(f"there is no model {name!r}; models: {', '.join(self.kinds)}")
        stored = self.store.read_version(name, version)  # NotFound, or CorruptVersion below
        predictor = kind.load(stored)
        with self._load_locks[name]:
            self.store.set_serving(name, version)
            self._served[name] = ServedModel(name, version, stored.manifest, predictor)
            metrics.SERVING_VERSION.labels(name).set(version)
            self._status[name] = ModelStatus("ready")
            self._stamps[name] = self.store.pointer_stamp(name)
        self._after_swap()
        return self._served[name]
