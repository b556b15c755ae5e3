"""The messages between the server and the model's process (serving.model_host), and how they travel.

Each is a frame on the process's stdin or stdout: its length, then the pickled message (both
ends are this service). A request is LoadModel or Predict; the answer is a Reply. They are
NamedTuples: typed, and pickled several times faster than dataclasses (per request). Errors
cross as the domain exception they are: an image the model cannot read comes back as its
ServiceError (its status and message intact), a failure of the process as ModelProcessFailed.
"""

import pickle
import struct
from typing import Any, BinaryIO, NamedTuple

import numpy as np

from prediction_service.core.errors import ServiceError

FRAME_HEADER = struct.Struct(">I")


class ModelProcessFailed(RuntimeError):
    """The model's process could not do what it was asked (it lives on)."""


class LoadModel(NamedTuple):
    version: int
    onnx_path: str


class ImageUpload(NamedTuple):
    name: str  # how errors name the file
    data: bytes | None = None
    image: np.ndarray | None = None  # decoded already (big files are decoded in the server, in a thread)


class Predict(NamedTuple):
    version: int
    onnx_path: str
    uploads: list[ImageUpload]


class Classified(NamedTuple):
    probabilities: list[float]  # of each class
    image: np.ndarray  # the normalised 28x28 uint8 digit the model saw (the prediction log keeps it)


# Per upload: what the model made of it, or why that one file could not be read.
Outcome = Classified | ServiceError


class Reply(NamedTuple):
    outcomes: list[Outcome] | None = None
    failure: ModelProcessFailed | None = None


def encode_frame(message: LoadModel | Predict | Reply) -> bytes:
    payload = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return FRAME_HEADER.pack(len(payload)) + payload


def decode_payload(payload: bytes) -> Any:
    return pickle.loads(payload)  # noqa: S301 - written by our own parent or child process


def read_frame(stream: BinaryIO) -> Any | None:
    header = stream.read(FRAME_HEADER.size)
    if len(header) < FRAME_HEADER.size:
        return None
    (length,) = FRAME_HEADER.unpack(header)
    return decode_payload(stream.read(length))
