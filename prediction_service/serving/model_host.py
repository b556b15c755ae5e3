"""The mnist model's own process: decodes uploaded images and runs the ONNX model.

    python -m prediction_service.serving.model_host --parent-pid N [--threads 1] ...

The server's event loop only parses HTTP; all image work happens here, so the two
never compete for the same interpreter lock. It reads LoadModel and Predict frames
on stdin and answers each with a Reply on stdout (see serving.messages).
"""

import argparse
import logging
import sys
from collections import OrderedDict
from pathlib import Path

import numpy as np

from prediction_service.core.child_process import child_arguments, set_up_child
from prediction_service.core.errors import ServiceError
from prediction_service.models.mnist.images import ImageLimits, decode_digits, warm_up
from prediction_service.models.mnist.onnx_runtime import OnnxDigitClassifier
from prediction_service.serving.messages import (
    Classified,
    LoadModel,
    ModelProcessFailed,
    Outcome,
    Predict,
    Reply,
    encode_frame,
    read_frame,
)

log = logging.getLogger("prediction_service.serving.model_host")
# The serving version, the shadow, and a version being swapped in while requests drain: none evicts another.
KEPT_MODELS = 3


class ModelHost:
    def __init__(self, limits: ImageLimits, threads: int) -> None:
        self.limits = limits
        self.threads = threads
        # The versions used last (the serving one, the shadow, and the one replaced while requests drain).
        self.models: OrderedDict[int, OnnxDigitClassifier] = OrderedDict()

    def model(self, version: int, path: str) -> OnnxDigitClassifier:
        if version in self.models:
            self.models.move_to_end(version)
        else:
            self.models[version] = OnnxDigitClassifier(Path(path), self.threads)
            while len(self.models) > KEPT_MODELS:
                self.models.popitem(last=False)
        return self.models[version]

    def predict(self, request: Predict) -> list[Outcome]:
        uploads = request.uploads
        outcomes: list[Outcome | None] = [None] * len(uploads)
        images: list[np.ndarray | None] = [upload.image for upload in uploads]
        undecoded = [i for i, image in enumerate(images) if image is None]
        files = [(uploads[i].name, uploads[i].data or b"") for i in undecoded]
        for position, decoded in zip(undecoded, decode_digits(files, self.limits), strict=True):
            if isinstance(decoded, ServiceError):
                outcomes[position] = decoded
            else:
                images[position] = decoded
        ready = [i for i in range(len(uploads)) if outcomes[i] is None]
        if ready:
            model = self.model(request.version, request.onnx_path)
            probabilities = model.probabilities(np.stack([images[i] for i in ready]))  # type: ignore[misc]
            for position, row in zip(ready, probabilities.tolist(), strict=True):
                outcomes[position] = Classified(row, images[position])  # type: ignore[arg-type]
        return [outcome for outcome in outcomes if outcome is not None]

    def handle(self, message: LoadModel | Predict) -> Reply:
        if isinstance(message, LoadModel):
            self.model(message.version, message.onnx_path)
            return Reply()
        if isinstance(message, Predict):
            return Reply(outcomes=self.predict(message))
        return Reply(failure=ModelProcessFailed(f"unknown message {type(message).__name__}"))


def main(argv: list[str] | None = None) -> int:
    parser = child_arguments(argparse.ArgumentParser(prog="python -m prediction_service.serving.model_host"))
    parser.add_argument("--max-image-bytes", type=int, required=True)
    parser.add_argument("--max-image-pixels", type=int, required=True)
    args = parser.parse_args(argv)
    set_up_child(args)
    warm_up()
    host = ModelHost(ImageLimits(args.max_image_bytes, args.max_image_pixels), args.threads)
    requests, answers = sys.stdin.buffer, sys.stdout.buffer
    while (message := read_frame(requests)) is not None:
        try:
            answer = host.handle(message)
        except Exception as error:  # the server gets the failure; this process lives on
            log.exception("%s failed", type(message).__name__)
            answer = Reply(failure=ModelProcessFailed(f"the model's process failed: {type(error).__name__}: {error}"))
        answers.write(encode_frame(answer))
        answers.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
