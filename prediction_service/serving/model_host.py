"""The digit model's own process: decodes uploaded images and runs the ONNX model.

    python -m prediction_service.serving.model_host --parent-pid N [--threads 1] ...

The server's event loop only parses HTTP; all image work happens here, so the two
never compete for the same interpreter lock. Requests and answers are frames on
stdin and stdout (see child_process):

    ("load", version, onnx_path)                 -> ("ok", None)
    ("predict", version, onnx_path, uploads)     -> ("ok", outcomes)
      uploads: [(name, bytes or None, decoded array or None)]
      outcomes: [("digit", probabilities) or ("error", status, message)]
"""

import argparse
import logging
import sys
from collections import OrderedDict
from pathlib import Path

import numpy as np

from prediction_service.core import logs
from prediction_service.core.child_process import die_with_parent, encode_frame, read_frame
from prediction_service.core.errors import ServiceError
from prediction_service.models.mnist.images import ImageLimits, decode_digits, warm_up
from prediction_service.models.mnist.onnx_runtime import OnnxDigitClassifier

log = logging.getLogger("prediction_service.serving.model_host")
KEPT_MODELS = 2


class Worker:
    def __init__(self, limits: ImageLimits, threads: int) -> None:
        self.limits = limits
        self.threads = threads
        # The versions used last (the serving one, and the one it replaced while requests drain).
        self.models: OrderedDict[int, OnnxDigitClassifier] = OrderedDict()

    def model(self, version: int, path: str) -> OnnxDigitClassifier:
        if version in self.models:
            self.models.move_to_end(version)
        else:
            self.models[version] = OnnxDigitClassifier(Path(path), self.threads)
            while len(self.models) > KEPT_MODELS:
                self.models.popitem(last=False)
        return self.models[version]

    def predict(self, version: int, path: str, uploads: list) -> list:
        outcomes: list = [None] * len(uploads)
        images = [image for _, _, image in uploads]
        undecoded = [i for i, image in enumerate(images) if image is None]
        files = [(uploads[i][0], uploads[i][1] or b"") for i in undecoded]
        for position, outcome in zip(undecoded, decode_digits(files, self.limits), strict=True):
            if isinstance(outcome, ServiceError):
                outcomes[position] = ("error", outcome.status_code, outcome.detail)
            else:
                images[position] = outcome
        ready = [i for i in range(len(uploads)) if outcomes[i] is None]
        if ready:
            probabilities = self.model(version, path).probabilities(np.stack([images[i] for i in ready]))
            for position, row in zip(ready, probabilities.tolist(), strict=True):
                outcomes[position] = ("digit", row)
        return outcomes

    def handle(self, message: tuple) -> tuple:
        if message[0] == "load":
            self.model(message[1], message[2])
            return ("ok", None)
        if message[0] == "predict":
            return ("ok", self.predict(*message[1:]))
        return ("failed", f"unknown message {message[0]!r}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m prediction_service.inference_worker", description=__doc__)
    parser.add_argument("--parent-pid", type=int, required=True)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--max-image-bytes", type=int, required=True)
    parser.add_argument("--max-image-pixels", type=int, required=True)
    parser.add_argument("--log-level", default="INFO")
    parser.add_argument("--json-logs", action="store_true")
    args = parser.parse_args(argv)
    die_with_parent(args.parent_pid)
    logs.configure(args.log_level, args.json_logs)
    warm_up()
    worker = Worker(ImageLimits(args.max_image_bytes, args.max_image_pixels), args.threads)
    requests, answers = sys.stdin.buffer, sys.stdout.buffer
    while (message := read_frame(requests)) is not None:
        try:
            answer = worker.handle(message)
        except Exception as error:  # the server gets the failure; this process lives on
            log.exception("request %s failed", message[0])
            answer = ("failed", f"{type(error).__name__}: {error}")
        answers.write(encode_frame(answer))
        answers.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
