"""Response bodies, as the OpenAPI schema documents them."""

from typing import Any

from pydantic import BaseModel, Field


class ModelState(BaseModel):
    state: str = Field(description="loading, training, ready, unavailable or failed")
    serving_version: int | None = None
    reason: str | None = None
    fix: str | None = None


class ServiceInfo(BaseModel):
    name: str
    description: str
    models: dict[str, ModelState]
    docs: str = "/docs"


class Liveness(BaseModel):
    status: str = "alive"


class Readiness(BaseModel):
    status: str = Field(description="ready, or not ready (then the answer is 503)")
    models: dict[str, ModelState]


class PenguinParameters(BaseModel):
    bill_length_mm: float
    flipper_length_mm: float


class PenguinPrediction(BaseModel):
    parameters: PenguinParameters
    result: str = Field(description="The predicted species.", examples=["Adelie"])
    probabilities: dict[str, float] = Field(description="Share of the 11 nearest training penguins per species.")
    model_version: int
    warnings: list[str] = Field(default_factory=list, description="Why the prediction may be unreliable.")


class DigitPrediction(BaseModel):
    filename: str | None
    result: str = Field(description="The predicted digit, as a string (as in the original tutorial).")
    probabilities: list[float] = Field(description="Probability of each digit 0-9.")
    confidence: float = Field(description="Probability of the predicted digit.")
    model_version: int


class VersionInfo(BaseModel):
    version: int
    created_at: str
    source: str | None = None
    serving: bool
    published: bool = Field(description="Whether this version has ever served (rejected candidates have not).")
    metrics: dict[str, Any]
    training_data: dict[str, Any] = Field(default_factory=dict)
    gate: dict[str, Any] | None = None
    job_id: str | None = None


class ModelInfo(ModelState):
    name: str
    versions: list[VersionInfo]


class ModelList(BaseModel):
    models: list[ModelInfo]
