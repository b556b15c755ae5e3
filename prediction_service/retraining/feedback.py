"""Feedback: the true label of an earlier prediction, kept as a collected example (storage.examples)."""

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from prediction_service.core.errors import InvalidInput, NotFound
from prediction_service.storage.examples import FEEDBACK, ExampleStore, Recorded
from prediction_service.storage.predictions import LoggedPrediction

log = logging.getLogger(__name__)
FindPrediction = Callable[[str], Awaitable[LoggedPrediction | None]]


@dataclass(frozen=True)
class LabelRecorded:
    prediction: LoggedPrediction
    recorded: Recorded


class Feedback:
    def __init__(
        self,
        examples: ExampleStore,
        find_prediction: FindPrediction,
        labels: Callable[[str], list[str]],
        log_max: int,
        on_recorded: Callable[[str], None],
        score_shadow: Callable[[str, str], object] = lambda prediction_id, label: None,
    ) -> None:
        """`labels`: a model's labels; `log_max`: PREDICTION_LOG_MAX; `on_recorded`: told the model's name;
        `score_shadow`: told the prediction id and its label (blocking: it runs in a thread)."""
        self.examples = examples
        self.find_prediction = find_prediction
        self.labels = labels
        self.log_max = log_max
        self.on_recorded = on_recorded
        self.score_shadow = score_shadow

    async def record(self, prediction_id: str, label: str) -> LabelRecorded:
        """Keep `label` as the truth of the prediction; durable when it returns. NotFound or InvalidInput."""
        if self.log_max == 0:
            raise NotFound(
                "feedback by prediction id is off: PREDICTION_LOG_MAX=0 keeps no predictions; set it above 0"
            )
        prediction = await self.find_prediction(prediction_id)
        if prediction is None:
            raise NotFound(
                f"there is no prediction {prediction_id[:64]!r}: its id is wrong, or it is older than the last "
                f"{self.log_max} predictions that the service keeps (PREDICTION_LOG_MAX)"
            )
        label = self._known_label(prediction.model, label)
        recorded = await asyncio.to_thread(
            self.examples.record, prediction.model, FEEDBACK, prediction.id, label, prediction.input
        )
        self.on_recorded(prediction.model)
        try:
            await asyncio.to_thread(self.score_shadow, prediction.id, label)
        except Exception:  # the label is kept: a failing shadow must not fail its answer
            log.exception("scoring the shadow on prediction %s failed", prediction.id)
        return LabelRecorded(prediction, recorded)

    def _known_label(self, model: str, label: str) -> str:
        """The model's own spelling of `label` (case aside: "adelie" is Adelie); InvalidInput if it has none."""
        labels = self.labels(model)
        wanted = label.strip().casefold()
        for known in labels:
            if known.casefold() == wanted:
                return known
        raise InvalidInput(f"{label[:40]!r} is not a label of the {model} model; send one of: {', '.join(labels)}")
