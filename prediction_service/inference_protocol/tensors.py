"""Tensors of the Open Inference Protocol: read an inference request, write its response.

Both encodings of the protocol are handled: tensor data inline in the JSON, and
the binary tensor data extension, where the body is a JSON header of
`Inference-Header-Content-Length` bytes followed by the raw tensors (BYTES
elements each prefixed with their length as a 4-byte little-endian integer).
"""

import math
import struct
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pydantic_core

from prediction_service.inference_protocol.errors import BadRequest

# Little-endian, as the binary extension specifies; BYTES has no fixed-size element type.
NUMERIC_DTYPES: dict[str, np.dtype] = {
    "BOOL": np.dtype("?"),
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
}
BYTES = "BYTES"
DATATYPES = (*NUMERIC_DTYPES, BYTES)
# The JSON scalar kinds NumPy infers that each datatype accepts (bool for BOOL, integers for INT*/UINT*).
JSON_KINDS = {"BOOL": "b", "FP16": "iuf", "FP32": "iuf", "FP64": "iuf"}
LENGTH_PREFIX = struct.Struct("<I")


@dataclass(frozen=True)
class Tensor:
    """A named tensor; `data` has `shape` (BYTES: an object array of `bytes`)."""

    name: str
    datatype: str
    data: np.ndarray
    # BYTES sent as JSON strings: a file inside them is base64 text, not raw bytes.
    from_json: bool = False

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.data.shape)


@dataclass(frozen=True)
class InferenceRequest:
    id: str | None
    inputs: dict[str, Tensor]
    # Requested outputs by name, and whether each wants binary data (None: the request's default).
    outputs: dict[str, bool | None] = field(default_factory=dict)
    binary_outputs_by_default: bool = False

    def wants_binary(self, output: str) -> bool:
        chosen = self.outputs.get(output)
        return self.binary_outputs_by_default if chosen is None else chosen


def parse_request(body: bytes, header_length: str | None) -> InferenceRequest:
    """An inference request from the HTTP body; `header_length` is the Inference-Header-Content-Length."""
    if header_length is None:
        header, binary = body, b""
    else:
        try:
            length = int(header_length)
        except ValueError:
            raise BadRequest(f"Inference-Header-Content-Length must be a whole number, got {header_length!r}") from None
        if not 0 < length <= len(body):
            raise BadRequest(
                f"Inference-Header-Content-Length is {length}, but the body has {len(body)} bytes: "
                "it must give the size of the JSON header at the body's start"
            )
        header, binary = body[:length], body[length:]
    try:
        document = pydantic_core.from_json(header)
    except ValueError as error:
        raise BadRequest(f"the inference request is not valid JSON: {error}") from None
    if not isinstance(document, dict) or not isinstance(document.get("inputs"), list) or not document["inputs"]:
        raise BadRequest('the inference request must be a JSON object with a non-empty list "inputs"')
    request_id = document.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise BadRequest('"id" must be a string')
    parameters = _object(document.get("parameters"), "parameters")
    offset = 0
    inputs: dict[str, Tensor] = {}
    for position, raw in enumerate(document["inputs"]):
        tensor, offset = _read_input(raw, position, binary, offset)
        if tensor.name in inputs:
            raise BadRequest(f"input {tensor.name!r} is sent twice")
        inputs[tensor.name] = tensor
    if offset != len(binary):
        raise BadRequest(
            f"{len(binary) - offset} bytes of binary data follow the JSON header that no input claims "
            "(check each input's binary_data_size and Inference-Header-Content-Length)"
        )
    return InferenceRequest(
        id=request_id,
        inputs=inputs,
        outputs=_requested_outputs(document.get("outputs")),
        binary_outputs_by_default=parameters.get("binary_data_output") is True,
    )


def _object(value: Any, what: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise BadRequest(f"{what} must be a JSON object")
    return value


def _requested_outputs(raw: Any) -> dict[str, bool | None]:
    if raw is None:
        return {}
    if not isinstance(raw, list):
        raise BadRequest('"outputs" must be a list of {"name": ...} objects')
    outputs: dict[str, bool | None] = {}
    for item in raw:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise BadRequest('each requested output must be an object with a string "name"')
        binary = _object(item.get("parameters"), f"output {item['name']!r}'s parameters").get("binary_data")
        outputs[item["name"]] = binary if isinstance(binary, bool) else None
    return outputs


def _read_input(raw: Any, position: int, binary: bytes, offset: int) -> tuple[Tensor, int]:
    if not isinstance(raw, dict) or not isinstance(raw.get("name"), str):
        raise BadRequest(f'input {position} must be an object with a string "name"')
    name = raw["name"]
    datatype = raw.get("datatype")
    if datatype not in DATATYPES:
        raise BadRequest(f"input {name!r}: datatype {datatype!r} is not one of the protocol's: {', '.join(DATATYPES)}")
    shape = raw.get("shape")
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
        raise BadRequest(f"input {name!r}: shape must be a list of whole numbers >= 0, got {shape!r}")
    size = _object(raw.get("parameters"), f"input {name!r}'s parameters").get("binary_data_size")
    if size is not None:
        if not isinstance(size, int) or isinstance(size, bool) or size < 0 or offset + size > len(binary):
            raise BadRequest(
                f"input {name!r}: binary_data_size {size!r} does not fit the {len(binary) - offset} binary bytes "
                "left after the JSON header (is Inference-Header-Content-Length set?)"
            )
        chunk = binary[offset : offset + size]
        data = _from_binary(chunk, datatype, shape, name)
        offset += size
        from_json = False
    else:
        if "data" not in raw:
            raise BadRequest(f"input {name!r} has neither data nor parameters.binary_data_size")
        data = _from_json(raw["data"], datatype, shape, name)
        from_json = True
    return Tensor(name, datatype, data.reshape(shape), from_json=from_json), offset


def _from_binary(chunk: bytes, datatype: str, shape: list[int], name: str) -> np.ndarray:
    count = math.prod(shape)
    if datatype == BYTES:
        elements = []
        position = 0
        while position < len(chunk):
            if position + 4 > len(chunk):
                raise BadRequest(f"input {name!r}: a BYTES element's 4-byte length prefix is cut off")
            (length,) = LENGTH_PREFIX.unpack_from(chunk, position)
            position += 4
            if position + length > len(chunk):
                raise BadRequest(f"input {name!r}: a BYTES element claims {length} bytes, more than are left")
            elements.append(chunk[position : position + length])
            position += length
        if len(elements) != count:
            raise BadRequest(f"input {name!r}: {len(elements)} BYTES elements, but shape {shape} holds {count}")
        array = np.empty(count, dtype=object)
        array[:] = elements
        return array
    dtype = NUMERIC_DTYPES[datatype]
    if len(chunk) != count * dtype.itemsize:
        raise BadRequest(
            f"input {name!r}: {len(chunk)} bytes of {datatype} data, but shape {shape} needs {count * dtype.itemsize}"
        )
    return np.frombuffer(chunk, dtype=dtype)


def _from_json(data: Any, datatype: str, shape: list[int], name: str) -> np.ndarray:
    count = math.prod(shape)
    if not isinstance(data, list):
        data = [data]
    if datatype == BYTES:
        elements = list(_flatten(data))
        if not all(isinstance(element, str) for element in elements):
            raise BadRequest(f"input {name!r}: BYTES data in JSON must be strings")
        array = np.empty(len(elements), dtype=object)
        array[:] = [element.encode() for element in elements]
    else:
        try:
            inferred = np.asarray(data)
        except ValueError:
            raise BadRequest(f"input {name!r}: data is ragged; send a flat list or equal-length nested lists") from None
        if inferred.size and inferred.dtype.kind not in JSON_KINDS.get(datatype, "iu"):
            raise BadRequest(f"input {name!r}: data must be {datatype} values; got {_kind_name(inferred)}")
        try:
            array = inferred.astype(NUMERIC_DTYPES[datatype]).reshape(-1)
        except (OverflowError, ValueError):
            raise BadRequest(f"input {name!r}: a value is out of {datatype}'s range") from None
        if datatype not in JSON_KINDS and inferred.size and not np.array_equal(array, inferred.reshape(-1)):
            raise BadRequest(f"input {name!r}: a value is out of {datatype}'s range")
    if array.size != count:
        raise BadRequest(f"input {name!r}: {array.size} values, but shape {shape} holds {count}")
    return array


def _kind_name(array: np.ndarray) -> str:
    kinds = {"b": "booleans", "i": "integers", "u": "integers", "f": "fractional numbers", "U": "strings"}
    return kinds.get(array.dtype.kind, "other values")


def _flatten(data: list) -> Any:
    for item in data:
        if isinstance(item, list):
            yield from _flatten(item)
        else:
            yield item


def encode_response(
    model_name: str,
    model_version: int,
    request: InferenceRequest,
    outputs: list[Tensor],
    request_id: str | None,
    parameters: dict[str, Any] | None = None,
) -> tuple[bytes, dict[str, str]]:
    """The response body and the headers it needs (the binary extension's, when an output is binary)."""
    described = []
    binary_parts = []
    for tensor in outputs:
        entry: dict[str, Any] = {"name": tensor.name, "datatype": tensor.datatype, "shape": list(tensor.shape)}
        if request.wants_binary(tensor.name):
            raw = _to_binary(tensor)
            entry["parameters"] = {"binary_data_size": len(raw)}
            binary_parts.append(raw)
        elif tensor.datatype == BYTES:
            entry["data"] = [element.decode("utf-8", "replace") for element in tensor.data.reshape(-1)]
        else:
            entry["data"] = tensor.data.reshape(-1).tolist()
        described.append(entry)
    document: dict[str, Any] = {"model_name": model_name, "model_version": str(model_version), "outputs": described}
    if request_id is not None:
        document["id"] = request_id
    if parameters:
        document["parameters"] = parameters
    header = pydantic_core.to_json(document)
    if not binary_parts:
        return header, {"content-type": "application/json"}
    headers = {"content-type": "application/octet-stream", "inference-header-content-length": str(len(header))}
    return b"".join([header, *binary_parts]), headers


def _to_binary(tensor: Tensor) -> bytes:
    if tensor.datatype == BYTES:
        return b"".join(LENGTH_PREFIX.pack(len(element)) + element for element in tensor.data.reshape(-1))
    return np.ascontiguousarray(tensor.data, dtype=NUMERIC_DTYPES[tensor.datatype]).tobytes()
