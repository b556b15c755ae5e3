"""What a model takes and gives in the protocol: its tensors, and how a request reaches its predict.

A signature is declared once per model (its `protocol_signature`); the protocol's
metadata, Triton's model configuration and the checks of every request derive
from it, so a model with a signature is served under /v2 without new routes.
"""

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from prediction_service.inference_protocol.errors import BadRequest
from prediction_service.inference_protocol.tensors import BYTES, Tensor

if TYPE_CHECKING:
    from prediction_service.models.interface import ServedModel

BATCH = -1  # the first dimension of every tensor: rows, any number up to MAX_BATCH_ITEMS


@dataclass(frozen=True)
class TensorSpec:
    name: str
    datatype: str  # the one the metadata declares
    shape: tuple[int, ...]  # BATCH first; -1 elsewhere: any size
    also_accepted: tuple[str, ...] = ()  # datatypes converted to the declared one
    optional: bool = False

    def metadata(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}

    def triton(self) -> dict[str, Any]:
        """Triton's model-config entry: dims without the batch dimension (a batch of scalars is [1], reshaped)."""
        entry: dict[str, Any] = {"name": self.name, "data_type": triton_type(self.datatype), "format": "FORMAT_NONE"}
        dims = list(self.shape[1:])
        if dims:
            entry["dims"] = dims
        else:
            entry["dims"] = [1]
            entry["reshape"] = {"shape": []}
        if self.optional:
            entry["optional"] = True
        return entry

    def check(self, tensor: Tensor) -> None:
        if tensor.datatype != self.datatype and tensor.datatype not in self.also_accepted:
            accepted = " or ".join((self.datatype, *self.also_accepted))
            raise BadRequest(f"input {self.name!r} must be {accepted}, got {tensor.datatype}")
        fits = len(tensor.shape) == len(self.shape) and all(
            want == -1 or got == want for got, want in zip(tensor.shape, self.shape, strict=True)
        )
        if not fits:
            wanted = "[" + ", ".join("n" if d == -1 else str(d) for d in self.shape) + "]"
            raise BadRequest(f"input {self.name!r} must have shape {wanted}, got {list(tensor.shape)}")


def triton_type(datatype: str) -> str:
    return "TYPE_STRING" if datatype == BYTES else f"TYPE_{datatype}"


@dataclass(frozen=True)
class Prediction:
    outputs: list[Tensor]
    model_version: int
    prediction_ids: list[str] = field(default_factory=list)  # one per row; answered in the response's parameters


# Decoded, checked input tensors by name, and the version addressed (None: the serving one, batched with every
# other request; else the shadow, loaded) -> every output of the model.
Predict = Callable[[dict[str, Tensor], "ServedModel[Any] | None"], Awaitable[Prediction]]


@dataclass(frozen=True)
class ModelSignature:
    name: str
    platform: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    predict: Predict

    def metadata(self, versions: list[int]) -> dict[str, Any]:
        return {
            "name": self.name,
            "versions": [str(version) for version in versions],
            "platform": self.platform,
            "inputs": [spec.metadata() for spec in self.inputs],
            "outputs": [spec.metadata() for spec in self.outputs],
        }

    def triton_config(self, max_batch_size: int) -> dict[str, Any]:
        return {
            "name": self.name,
            "platform": self.platform,
            "backend": "",
            "max_batch_size": max_batch_size,
            "input": [spec.triton() for spec in self.inputs],
            "output": [spec.triton() for spec in self.outputs],
        }

    def check_inputs(self, inputs: dict[str, Tensor], max_rows: int) -> None:
        """Names, datatypes, shapes and the number of rows, each with a message that says what to send."""
        specs = {spec.name: spec for spec in self.inputs}
        for name in inputs:
            if name not in specs:
                raise BadRequest(f"model {self.name!r} has no input {name!r}; its inputs: {', '.join(specs)}")
        for spec in self.inputs:
            if spec.name in inputs:
                spec.check(inputs[spec.name])
            elif not spec.optional:
                raise BadRequest(f"input {spec.name!r} is missing ({spec.datatype} {list(spec.shape)})")
        rows = {tensor.shape[0] for tensor in inputs.values()}
        if len(rows) > 1:
            raise BadRequest(f"every input must have the same number of rows (first dimension), got {sorted(rows)}")
        count = rows.pop()
        if count == 0:
            raise BadRequest("send at least one row")
        if count > max_rows:
            raise BadRequest(f"{count} rows in one request; at most {max_rows} (MAX_BATCH_ITEMS)")

    def check_outputs(self, requested: dict[str, bool | None]) -> None:
        names = [spec.name for spec in self.outputs]
        for name in requested:
            if name not in names:
                raise BadRequest(f"model {self.name!r} has no output {name!r}; its outputs: {', '.join(names)}")
