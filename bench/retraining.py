"""What replay costs and what it buys: retraining jobs with and without it, in one run.

    python bench/retraining.py [--replay-size 2000] [--base-epochs 3]

Trains one base store (the bundled MNIST sample, like a small deployment), then for each upload
(1,000 shuffled images: samples/retrain_img.zip; 800 images in folders per class, in class order;
300 images of one digit; 1,000 mislabelled images, which the gate must refuse) and each replay size
(RETRAIN_REPLAY_SIZE and 0) starts the service on a fresh copy of that store, uploads, and times the
job from the upload's answer to its verdict. Every job uses the default retraining settings
(RETRAIN_EPOCHS 15, learning rate 0.0003, gate margin 0.01).
Prints a table; writes bench/results/retraining-latest.md.
"""

import argparse
import io
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from servers import start_server  # noqa: E402

MNIST_SAMPLE = ROOT / "data" / "mnist-sample.npz"
TOKEN = "bench-token"


def png(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def folders_zip(images: np.ndarray, labels: np.ndarray) -> bytes:
    """Folders per class, entries in class order (as `zip -r` writes them)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for index in np.argsort(labels, kind="stable"):
            archive.writestr(f"{labels[index]}/img_{index:05d}.png", png(images[index]))
    return buffer.getvalue()


def uploads() -> dict[str, bytes]:
    with np.load(MNIST_SAMPLE) as data:
        images, labels = data["x_train"], data["y_train"]
    eights = images[labels == 8][:300]
    return {
        "1,000 images, labels file, shuffled (samples/retrain_img.zip)": (
            ROOT / "samples" / "retrain_img.zip"
        ).read_bytes(),
        "800 images, folder per class, class order": folders_zip(images[:800], labels[:800]),
        "300 images of the digit 8": folders_zip(eights, np.full(len(eights), 8, np.uint8)),
        "1,000 images, every label wrong (shifted by one)": folders_zip(images[:1000], (labels[:1000] + 1) % 10),
    }


def run_job(base: Path, work: Path, data: bytes, replay_size: int) -> dict:
    model_dir = work / f"store-{time.monotonic_ns()}"
    shutil.copytree(base, model_dir)
    env = {"MODEL_DIR": str(model_dir), "ADMIN_TOKEN": TOKEN, "RETRAIN_REPLAY_SIZE": str(replay_size)}
    server = start_server(env, work / "server.log")
    url = server.url
    try:
        server.wait_until_ready(120)
        answer = httpx.post(
            f"{url}/upload-images",
            files={"file": ("upload.zip", data)},
            headers={"Authorization": f"Bearer {TOKEN}"},
            timeout=120,
        )
        answer.raise_for_status()
        started = time.monotonic()
        job_id = answer.json()["job_id"]
        while True:
            job = httpx.get(f"{url}/jobs/{job_id}", timeout=10).json()
            if job["status"] not in ("queued", "running"):
                break
            time.sleep(0.2)
        return {"seconds": time.monotonic() - started, **job}
    finally:
        server.stop()
        shutil.rmtree(model_dir, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--replay-size", type=int, default=2000, help="RETRAIN_REPLAY_SIZE of the jobs with replay")
    parser.add_argument("--base-epochs", type=int, default=3, help="MNIST_EPOCHS of the base version")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-retraining-"))
    base = work / "base"
    print(f"work folder: {work}; training the base version ({args.base_epochs} epochs, 8,000 images) ...")
    subprocess.run(
        [sys.executable, "-m", "prediction_service", "train"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        env={
            **os.environ,
            "MODEL_DIR": str(base),
            "MNIST_DATA": str(MNIST_SAMPLE),
            "MNIST_EPOCHS": str(args.base_epochs),
        },
    )
    rows = []
    for name, data in uploads().items():
        for replay_size in (args.replay_size, 0):
            job = run_job(base, work, data, replay_size)
            result = job.get("result") or {}
            new, serving = result.get("holdout_accuracy", float("nan")), result.get("serving_accuracy", float("nan"))
            line = f"| {name} | {replay_size} | {job['seconds']:.1f} s | {job['status']} | {new:.2%} | {serving:.2%} |"
            print(line, flush=True)
            rows.append(line)
    table = (
        f"Machine: {os.cpu_count()} cores; RETRAIN_EPOCHS 15, TRAINING_THREADS 1; the base version trained "
        f"{args.base_epochs} epochs on the bundled sample's 8,000 images\n\n"
        "| upload | replay images | job duration | verdict | new hold-out | serving hold-out |\n"
        "| --- | --- | --- | --- | --- | --- |\n" + "\n".join(rows) + "\n"
    )
    print(table)
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / "retraining-latest.md").write_text(table)
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
