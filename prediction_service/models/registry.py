"""The models in memory: name -> the version that serves, loaded before it is seen.

A swap loads the new version completely (and warms it up) while the old one
keeps answering, then replaces one dictionary entry; a request reads that entry
once, so it sees either the old model or the new one, never a mix. Every worker
process polls the store's serving pointers (`refresh`) so that all of them serve
the version the pointer names, whichever process moved it.

A model may also have a shadow: another version, loaded the same way when the store's
shadow pointer names it, that answers beside the serving one (serving.shadow compares them).
"""

import dataclasses
import logging
import threading
from collections.abc import Callable
from typing import Any, TypeVar, cast

from prediction_service.core import metrics
from prediction_service.core.errors import Conflict, ModelUnavailable, NotFound
from prediction_service.models.interface import Model, ModelStatus, ServedModel, Unavailable
from prediction_service.storage.versions import CorruptVersion, ModelStore, StoredVersion

log = logging.getLogger(__name__)

Loaded = TypeVar("Loaded")


class NoUsableVersion(Exception):
    pass


class Registry:
    def __init__(
        self,
        store: ModelStore,
        models: list[Model[Any]],
        after_swap: Callable[[], None] | None = None,
        train_first_versions: bool = True,
    ) -> None:
        """`train_first_versions` False (RUN_TRAINING=false): a model without a version waits for one that
        another process publishes (`python -m prediction_service train`, a worker) instead of training it."""
        self.store = store
        self.train_first_versions = train_first_versions
        self._after_swap = after_swap or (lambda: None)
        self.models = {model.name: model for model in models}
        self._served: dict[str, ServedModel[Any]] = {}
        # The shadow versions loaded here, by model: read once per answer, so empty costs one lookup.
        self.shadows: dict[str, ServedModel[Any]] = {}
        self._shadow_stamps: dict[str, tuple[int, int] | None] = {}
        self._status = {name: ModelStatus() for name in self.models}
        self._stamps: dict[str, tuple[int, int] | None] = {}
        self._load_locks = {name: threading.Lock() for name in self.models}

    # Reading (request path)

    def get(self, name: str) -> ServedModel[Any]:
        served = self._served.get(name)
        if served is None:
            self._model(name)
            raise ModelUnavailable(self._unavailable_message(name), retry_after=self._retry_after(name))
        return served

    def serving(self, name: str, loaded_type: type[Loaded]) -> ServedModel[Loaded]:
        """`get`, typed: the route of a model knows what its versions load as."""
        served = self.get(name)
        assert isinstance(served.predictor, loaded_type), (name, type(served.predictor))
        return cast(ServedModel[Loaded], served)

    def labels(self, name: str) -> list[str]:
        """The labels the serving version answers with (503 while none serves)."""
        return self._model(name).labels(self.get(name).manifest)

    def status(self, name: str) -> ModelStatus:
        """How the model is doing, and which version serves (None while none does)."""
        return dataclasses.replace(self._status[name], serving_version=self.serving_version(name))

    def versions(self, name: str) -> tuple[list[StoredVersion], set[int]]:
        """Every stored version of the model, and those that have served (the others were rejected)."""
        self._model(name)
        pointer = self.store.serving(name)
        return self.store.list_versions(name), set() if pointer is None else pointer.published()

    def _model(self, name: str) -> Model[Any]:
        model = self.models.get(name)
        if model is None:
            raise NotFound(f"there is no model {name!r}; models: {', '.join(self.models)}")
        return model

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
        for model in self.models.values():
            try:
                self._ensure_first_version(model)
                self._load_serving(model)
                self.refresh_shadow(model.name)
            except Unavailable as error:
                log.error("%s", error.detail)
                self._status[model.name] = ModelStatus("unavailable", reason=error.reason, fix=error.fix)
            except Exception as error:
                log.exception("model %s failed to load", model.name)
                self._status[model.name] = ModelStatus("failed", reason=str(error))

    def _ensure_first_version(self, model: Model[Any]) -> None:
        if self.store.serving(model.name) is not None:
            return
        if not self.train_first_versions:
            raise Unavailable(
                model.name,
                "it has no version yet, and this process does not train (RUN_TRAINING=false)",
                "run `python -m prediction_service train` (or start `python -m prediction_service worker`) with the "
                "same store; this process serves the version as soon as it is published",
            )
        # One process trains; the others wait here, then find the pointer set.
        with self.store.lock(model.name, "first-training"):
            if self.store.serving(model.name) is not None:
                return
            initial = [
                v for v in self.store.list_versions(model.name) if v.manifest.get("source") == "initial training"
            ]
            if initial:  # trained before, but the process died before pointing at it
                version = initial[-1].version
            else:
                self._status[model.name] = ModelStatus("training")
                version = model.train_first_version(self.store).version
            self.store.set_serving(model.name, version)

    def _load_serving(self, model: Model[Any]) -> None:
        stamp = self.store.pointer_stamp(model.name)
        pointer = self.store.serving(model.name)
        if pointer is None:
            raise NoUsableVersion(f"{model.name} has no serving version")
        current = self._served.get(model.name)
        for version in pointer.candidates():
            if current is not None and current.version == version:
                self._stamps[model.name] = stamp
                return
            try:
                stored = self.store.read_version(model.name, version)
                predictor = model.load(stored)
            except (CorruptVersion, NotFound, OSError, ValueError) as error:
                log.warning("skipping %s version %d: %s", model.name, version, getattr(error, "detail", error))
                continue
            replaced = self._served.get(model.name)
            self._served[model.name] = ServedModel(model.name, version, stored.manifest, predictor)
            metrics.SERVING_VERSION.labels(model.name).set(version)
            self._status[model.name] = ModelStatus("ready")
            self._stamps[model.name] = stamp
            log.info("%s serves version %d", model.name, version)
            if replaced is not None:
                del replaced
                self._after_swap()
            return
        raise NoUsableVersion(f"no version of {model.name} in the serving history loads: {list(pointer.candidates())}")

    def refresh(self) -> None:
        """Serve what the store's pointers name now (cheap when nothing changed)."""
        self.store.check_stamps()
        for name in self.models:
            self.refresh_model(name)
            self.refresh_shadow(name)

    def pointer_moved(self, name: str | None, pointer: str | None) -> None:
        """Told that a pointer moved (storage.pointer_listener, in its thread): serve what it names now.
        `pointer`: "serving" or "shadow"; `name` None: anything may have moved."""
        if name is None:
            self.refresh()
        elif name in self.models:
            self.store.check_stamps()
            (self.refresh_shadow if pointer == "shadow" else self.refresh_model)(name)

    def pointer_changed(self, name: str) -> bool:
        """Whether the store names another serving version than the one loaded here (a stat); also for a model
        that waits for its first version (unavailable, nothing loaded)."""
        state = self._status[name].state
        waiting = state == "unavailable" and name not in self._served
        return (state == "ready" or waiting) and self.store.pointer_stamp(name) != self._stamps.get(name)

    def refresh_model(self, name: str) -> None:
        """Load the version the pointer names, if it changed since the last look (a stat otherwise)."""
        if not self.pointer_changed(name):
            return
        with self._load_locks[name]:  # one loader per model; others find the work done
            stamp = self.store.pointer_stamp(name)
            if stamp == self._stamps.get(name):
                return
            try:
                self._load_serving(self.models[name])
            except NoUsableVersion as error:
                log.error("%s; still serving the previous version", error)
                self._stamps[name] = stamp

    def activate(self, name: str, version: int) -> ServedModel[Any]:
        """Serve `version` of `name` here now, and in every other process at its next refresh."""
        model = self._model(name)
        stored = self.store.read_version(name, version)  # NotFound, or CorruptVersion below
        predictor = model.load(stored)
        with self._load_locks[name]:
            self.store.set_serving(name, version)  # ends the shadow if it was this version: promoted
            self._served[name] = ServedModel(name, version, stored.manifest, predictor)
            metrics.SERVING_VERSION.labels(name).set(version)
            self._status[name] = ModelStatus("ready")
            self._stamps[name] = self.store.pointer_stamp(name)
            if self.store.shadow(name) is None:
                self.shadows.pop(name, None)
                self._shadow_stamps[name] = self.store.shadow_stamp(name)
        self._after_swap()
        return self._served[name]

    # The shadow

    def set_shadow(self, name: str, version: int) -> ServedModel[Any]:
        """Load `version` of `name` here and make it the shadow, here now and elsewhere at the next refresh."""
        model = self._model(name)
        if version == self.get(name).version:
            raise Conflict(
                f"version {version} of {name!r} is the serving version: it cannot shadow itself; "
                "choose another version (GET /models lists them)"
            )
        stored = self.store.read_version(name, version)  # NotFound; CorruptVersion is a Conflict
        try:
            predictor = model.load(stored)
        except Conflict:  # CorruptVersion: says why already
            raise
        except Exception as error:
            why = getattr(error, "detail", error)
            raise Conflict(f"version {version} of {name!r} cannot be loaded, so it cannot shadow: {why}") from error
        with self._load_locks[name]:
            self.store.set_shadow(name, version)
            self.shadows[name] = ServedModel(name, version, stored.manifest, predictor)
            self._shadow_stamps[name] = self.store.shadow_stamp(name)
        return self.shadows[name]

    def end_shadow(self, name: str) -> None:
        self._model(name)
        with self._load_locks[name]:
            if not self.store.clear_shadow(name):
                raise NotFound(
                    f"model {name!r} has no shadow; POST /models/{name}/versions/{{version}}/shadow starts one"
                )
            self.shadows.pop(name, None)
            self._shadow_stamps[name] = self.store.shadow_stamp(name)

    def refresh_shadow(self, name: str) -> None:
        """Load the shadow the store names, or drop it, if its pointer changed since the last look (else a stat)."""
        if self._status[name].state != "ready" or self.store.shadow_stamp(name) == self._shadow_stamps.get(name):
            return
        with self._load_locks[name]:
            stamp = self.store.shadow_stamp(name)
            version = self.store.shadow(name)
            current = self.shadows.get(name)
            if version is None:
                self.shadows.pop(name, None)
            elif current is None or current.version != version:
                try:
                    stored = self.store.read_version(name, version)
                    self.shadows[name] = ServedModel(name, version, stored.manifest, self.models[name].load(stored))
                    log.info("%s version %d answers in shadow", name, version)
                except Exception as error:  # noqa: BLE001 - a shadow that cannot load is no reason to stop serving
                    log.error("%s version %d cannot shadow here: %s", name, version, getattr(error, "detail", error))
                    self.shadows.pop(name, None)
            self._shadow_stamps[name] = stamp
