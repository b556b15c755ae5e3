"""The models this service serves. A new model is one package under models/ and one line here."""

from typing import Any

from prediction_service.core.errors import NotFound
from prediction_service.models.interface import Model, ModelContext, ModelFactory
from prediction_service.models.mnist.model import MnistModel
from prediction_service.models.penguins.model import PenguinsModel

MODELS: list[ModelFactory] = [
    PenguinsModel,
    MnistModel,
]


def build_models(context: ModelContext) -> list[Model[Any]]:
    return [factory(context) for factory in MODELS]


def model_named(name: str) -> ModelFactory:
    for factory in MODELS:
        if factory.name == name:
            return factory
    raise NotFound(f"there is no model {name!r}; models: {', '.join(model_names())}")


def model_names() -> list[str]:
    return [factory.name for factory in MODELS]


def retrainable_model_names() -> list[str]:
    return [factory.name for factory in MODELS if factory.retraining is not None]
