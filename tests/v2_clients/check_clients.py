"""tritonclient and the kserve SDK against a running service, in JSON and binary mode.

    python tests/v2_clients/check_clients.py http://127.0.0.1:8000

Runs in the clients' own virtual environment (requirements.txt beside this file), not the
project's: tritonclient 2.51 needs numpy < 2 and kserve needs pandas < 3, both older than the
project's pins. tests/test_v2_clients.py starts it; it prints one line per check and exits
non-zero at the first failure.
"""

import asyncio
import base64
import sys
from pathlib import Path

import numpy as np
import tritonclient.http as triton
from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig
from tritonclient.utils import InferenceServerException

ROOT = Path(__file__).resolve().parents[2]
DIGIT_FILE = ROOT / "samples" / "test_img0.png"  # a 4 (tests/test_api_digits.py)
MNIST_SAMPLE = ROOT / "data" / "mnist-sample.npz"
PENGUINS = np.array([[40.3, 195.0], [47.5, 220.0]], dtype=np.float32)
SPECIES = ["Adelie", "Gentoo"]


def check(condition: bool, what: str) -> None:
    if not condition:
        raise SystemExit(f"FAILED: {what}")
    print(f"ok: {what}")


def text(value: bytes | str) -> str:
    """BYTES elements arrive as bytes in binary mode and as str from JSON."""
    return value.decode() if isinstance(value, bytes) else value


def mnist_images(count: int) -> tuple[np.ndarray, np.ndarray]:
    with np.load(MNIST_SAMPLE) as data:
        return data["x_test"][:count].astype(np.uint8), data["y_test"][:count]


def with_tritonclient(url: str) -> None:
    client = triton.InferenceServerClient(url.removeprefix("http://"))
    check(client.is_server_live() and client.is_server_ready(), "tritonclient: server live and ready")
    for model in ("penguins", "mnist"):
        check(client.is_model_ready(model), f"tritonclient: {model} ready")
        metadata = client.get_model_metadata(model)
        check(metadata["name"] == model and metadata["inputs"], f"tritonclient: {model} metadata")
        check(client.get_model_config(model)["max_batch_size"] > 0, f"tritonclient: {model} config")
    images, labels = mnist_images(8)
    for binary in (False, True):
        mode = "binary" if binary else "JSON"
        measurements = triton.InferInput("measurements", list(PENGUINS.shape), "FP32")
        measurements.set_data_from_numpy(PENGUINS, binary_data=binary)
        outputs = [triton.InferRequestedOutput(name, binary_data=binary) for name in ("species", "probabilities")]
        result = client.infer("penguins", [measurements], outputs=outputs, request_id="penguin-1")
        species = [text(value) for value in result.as_numpy("species")]
        check(species == SPECIES, f"tritonclient {mode}: penguins {species}")
        check(result.as_numpy("probabilities").shape == (2, 3), f"tritonclient {mode}: penguin probabilities")
        check(result.get_response()["id"] == "penguin-1", f"tritonclient {mode}: the request id is echoed")

        image = triton.InferInput("image", list(images.shape), "UINT8")
        image.set_data_from_numpy(images, binary_data=binary)
        digits = client.infer("mnist", [image], outputs=[triton.InferRequestedOutput("digit", binary_data=binary)])
        correct = int((digits.as_numpy("digit") == labels).sum())
        check(correct >= 6, f"tritonclient {mode}: {correct} of 8 MNIST test digits right (image tensor)")

        # JSON strings carry files as base64 text; the binary extension carries the raw bytes.
        encoded = DIGIT_FILE.read_bytes() if binary else base64.b64encode(DIGIT_FILE.read_bytes())
        image_file = triton.InferInput("image_file", [1, 1], "BYTES")
        image_file.set_data_from_numpy(np.array([[encoded]], dtype=object), binary_data=binary)
        result = client.infer("mnist", [image_file])
        check(int(result.as_numpy("digit")[0]) == 4, f"tritonclient {mode}: the digit in {DIGIT_FILE.name}")
        check(result.as_numpy("probabilities").shape == (1, 10), f"tritonclient {mode}: ten probabilities")
    wrong = triton.InferInput("bill", [1, 2], "FP32")
    wrong.set_data_from_numpy(PENGUINS[:1])
    try:
        client.infer("penguins", [wrong])
    except InferenceServerException as error:
        check("no input 'bill'" in str(error.message()), f"tritonclient: the error's message arrives: {error}")
    else:
        check(False, "tritonclient: an unknown input is refused")


async def with_kserve(url: str) -> None:
    client = InferenceRESTClient(RESTConfig(protocol="v2", retries=1, timeout=30))
    try:
        check(await client.is_server_ready(url), "kserve: server ready")
        for model in ("penguins", "mnist"):
            check(await client.is_model_ready(url, model), f"kserve: {model} ready")
        for binary in (False, True):
            mode = "binary" if binary else "JSON"
            measurements = InferInput("measurements", list(PENGUINS.shape), "FP32")
            measurements.set_data_from_numpy(PENGUINS, binary_data=binary)
            response = await client.infer(url, InferRequest("penguins", [measurements], request_id="k-1"), "penguins")
            outputs = {output.name: output.as_numpy() for output in response.outputs}
            species = [text(value) for value in outputs["species"]]
            check(species == SPECIES, f"kserve {mode}: penguins {species}")
            check(outputs["probabilities"].shape == (2, 3), f"kserve {mode}: penguin probabilities")
            images, labels = mnist_images(8)
            image = InferInput("image", list(images.shape), "UINT8")
            image.set_data_from_numpy(images, binary_data=binary)
            response = await client.infer(url, InferRequest("mnist", [image]), "mnist")
            digits = {output.name: output.as_numpy() for output in response.outputs}["digit"]
            correct = int((digits == labels).sum())
            check(correct >= 6, f"kserve {mode}: {correct} of 8 MNIST test digits right")
    finally:
        await client.close()


def main() -> None:
    url = sys.argv[1]
    with_tritonclient(url)
    asyncio.run(with_kserve(url))
    print("all client checks passed")


if __name__ == "__main__":
    main()
