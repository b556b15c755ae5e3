"""The one interface of a model: the registry, the CLI, /models, the routes and the training job use only this.

A model is a package under models/ with a class that has these members, listed once in
models/catalog.py. A loaded version is whatever `load` returns; its own typed `predict`
(or, for a model served from another process, its package's predictor) answers requests.
"""

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

import numpy as np

from prediction_service.core.errors import ModelUnavailable
from prediction_service.core.settings import Settings
from prediction_service.inference_protocol.signature import ModelSignature
from prediction_service.serving.model_process import ModelProcess
from prediction_service.storage.versions import ModelStore, StoredVersion

if TYPE_CHECKING:
    from prediction_service.services import Serving

Loaded = TypeVar("Loaded")
LoadedCo = TypeVar("LoadedCo", covariant=True)


class Unavailable(ModelUnavailable):
    """A model that cannot be trained or loaded, for a reason its operator can fix."""

    def __init__(self, model: str, reason: str, fix: str) -> None:
        super().__init__(f"model {model!r} is unavailable: {reason}; fix: {fix}")
        self.reason = reason
        self.fix = fix


class TrainingLibrariesMissing(Unavailable):
    """Training needs a library this install leaves out: the serving image has requirements-serving.txt only."""

    def __init__(self, model: str, library: str) -> None:
        super().__init__(
            model,
            f"training needs {library}, which is not installed here (the serving image leaves training out)",
            "train where requirements.txt is installed: the worker image (python -m prediction_service worker, "
            "or train for a first version)",
        )


@dataclass(frozen=True)
class ModelStatus:
    """How a model is doing: loading, training, ready, unavailable or failed (then why, and the fix)."""

    state: str = "loading"
    serving_version: int | None = None
    reason: str | None = None
    fix: str | None = None


@dataclass(frozen=True)
class ServedModel(Generic[Loaded]):
    """The version of a model that serves, loaded."""

    name: str
    version: int
    manifest: dict[str, Any]
    predictor: Loaded


class Candidate(Protocol):
    """A retrained copy of a model, not yet stored."""

    history: list[dict[str, float]]

    def score(self, holdout: tuple[np.ndarray, np.ndarray]) -> float: ...

    def refusal(self, holdout: tuple[np.ndarray, np.ndarray]) -> str | None:
        """Why this candidate must not be published whatever its score (e.g. it would not serve what it
        learned); None: nothing stops it."""
        ...

    def save(self, folder: Path) -> None: ...


ProgressCallback = Callable[[dict[str, Any]], None]  # called with each finished epoch's metrics

# A loaded version's answers (as the API shows them: "7", "Adelie") to inputs that the serving version answered,
# as the prediction routes offer them to the shadow. On the event loop: short work inline, and await what is long
# (another process), so that answers never wait for it.
ShadowAnswers = Callable[[Any, list[Any]], Awaitable[list[str]]]


def final_epoch(history: list[dict[str, float]]) -> dict[str, float]:
    """The last epoch's loss and accuracy (training and validation), for a version's metrics."""
    if not history:
        return {}
    last = history[-1]
    return {key: last[key] for key in ("loss", "accuracy", "val_loss", "val_accuracy") if key in last}


class RetrainingRecipe(Protocol):
    """What retraining a model needs: its hold-out, its gate, how to fine-tune a copy on the data it takes
    (labelled arrays: an accepted upload, storage.uploads, plus a replay sample of earlier data)."""

    gate_metric: str  # the hold-out metric a candidate must not lose (more than the margin) against the serving one
    unit: str  # what its examples are called in job records and manifests ("images", "rows")

    def params(self, settings: Settings) -> dict[str, Any]:
        """A job's parameters, fixed when it is queued. `replay_size`: examples replayed (None: all);
        `gate_margin`: RETRAIN_GATE_MARGIN; `epochs`, if it trains in epochs."""
        ...

    def set_up_process(self, threads: int) -> None:
        """Bound the training's threads, in the job's process before anything else runs there."""
        ...

    def holdout(self, store: ModelStore) -> tuple[np.ndarray, np.ndarray]:
        """The fixed hold-out set every version of the model is scored on."""
        ...

    def score(self, version: StoredVersion, holdout: tuple[np.ndarray, np.ndarray]) -> float:
        """A stored version's gate metric on the hold-out set."""
        ...

    def fine_tune(
        self,
        parent: StoredVersion,
        data: tuple[np.ndarray, np.ndarray],
        params: dict[str, Any],
        seed: int,
        on_epoch: ProgressCallback,
    ) -> Candidate:
        """A copy of `parent` trained further on `data`, shuffled with `seed` (never the object that serves)."""
        ...


class Model(Protocol[LoadedCo]):
    @property
    def name(self) -> str: ...

    @property
    def description(self) -> str:
        """A clause of the service's description: what it predicts, from what."""
        ...

    @property
    def retraining(self) -> RetrainingRecipe | None:
        """What retraining it needs; None: it is not retrained."""
        ...

    def train_first_version(self, store: ModelStore) -> StoredVersion:
        """Train and store version 1 (the registry makes it serve)."""
        ...

    def labels(self, manifest: dict[str, Any]) -> list[str]:
        """The labels a version (by its manifest) answers with, in the order of its class indices: what
        feedback may send, and what the class indices of its retraining data mean."""
        ...

    def load(self, stored: StoredVersion) -> LoadedCo:
        """Load a stored version so that it can serve; raise Unavailable, or any error for a bad version."""
        ...

    def protocol_signature(self, serving: "Serving") -> ModelSignature | None:
        """Its tensors and predict under /v2 (the Open Inference Protocol); None: not served there."""
        ...

    def shadow_answers(self, serving: "Serving") -> ShadowAnswers | None:
        """How a version other than the serving one answers as its shadow; None: it cannot have a shadow."""
        ...


@dataclass(frozen=True)
class ModelContext:
    """What a model is made with."""

    settings: Settings
    # The process that serves models outside the server's interpreter; None where nothing serves (CLI, tests).
    model_process: ModelProcess | None = None


class ModelFactory(Protocol):
    """A model's class: its name and what retraining needs are known before it is made."""

    @property
    def name(self) -> str: ...

    @property
    def retraining(self) -> RetrainingRecipe | None: ...

    def __call__(self, context: ModelContext) -> Model[Any]: ...
