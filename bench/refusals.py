"""How fast hostile input is refused: the time limits the tests no longer assert, measured here.

    python bench/refusals.py [--rounds 5]

Starts the service (one uvicorn worker, a store trained on 500 images for one epoch) and times, from the
client, the answer to each hostile request (median of the rounds): a zip bomb (50 MB of zeros in a
~50 KB zip), a central directory of 5,000 records, an image over the pixel limit, a 60,000-character
query, an anonymous 10 MB upload. Each must be refused (4xx) quickly: the targets are the bounds the
tests used to assert (1 s for the zip bomb, 2-3 s for the others). Writes bench/results/refusals-latest.md.
"""

import argparse
import io
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

import httpx
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from servers import start_server  # noqa: E402

TOKEN = "bench-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def zip_bomb() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("0.png", b"\x00" * 50_000_000)
        archive.writestr("labels.txt", b"1")
    return buffer.getvalue()


def directory_bomb() -> bytes:
    record = struct.pack("<4s4B4HL2L5H2L", b"PK\x01\x02", 20, 3, 20, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0)
    directory = (record + b"a") * 5000
    return directory + struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, 1, 1, len(directory), 0, 0)


def huge_image() -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (6000, 6000), 255).save(buffer, format="PNG")  # 36 million pixels, over the 25 million limit
    return buffer.getvalue()


def cases(url: str) -> dict[str, tuple[Callable[[httpx.Client], httpx.Response], float]]:
    bomb, directory, image = zip_bomb(), directory_bomb(), huge_image()
    return {
        "zip bomb (50 MB of zeros), admin upload": (
            lambda c: c.post(f"{url}/upload-images", files={"file": ("b.zip", bomb)}, headers=AUTH),
            1.0,
        ),
        "central directory of 5,000 records": (
            lambda c: c.post(f"{url}/upload-images", files={"file": ("d.zip", directory)}, headers=AUTH),
            3.0,
        ),
        "image of 36 million pixels": (lambda c: c.post(f"{url}/predict-image", files={"file": ("i.png", image)}), 3.0),
        "query of 60,000 characters": (
            lambda c: c.get(f"{url}/predict", params={"bill_length_mm": "4" * 60_000, "flipper_length_mm": 195}),
            3.0,
        ),
        "anonymous 10 MB upload": (
            lambda c: c.post(f"{url}/upload-images", files={"file": ("a.zip", b"\x00" * 10_000_000)}),
            2.0,
        ),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-refusals-"))
    env = {
        "MODEL_DIR": str(work / "store"),
        "ADMIN_TOKEN": TOKEN,
        "MNIST_DATA": str(ROOT / "data" / "mnist-sample.npz"),
        "MNIST_TRAIN_SIZE": "500",
        "MNIST_EPOCHS": "1",
    }
    subprocess.run([sys.executable, "-m", "prediction_service", "train"], cwd=ROOT, env=env, check=True)
    server = start_server(env, work / "server.log")
    rows = []
    try:
        server.wait_until_ready(120)
        with httpx.Client(timeout=60) as client:
            for name, (send, target) in cases(server.url).items():
                times, statuses = [], set()
                for _ in range(args.rounds):
                    started = time.perf_counter()
                    statuses.add(send(client).status_code)
                    times.append(time.perf_counter() - started)
                seconds = statistics.median(times)
                verdict = "ok" if seconds < target and all(400 <= s < 500 for s in statuses) else "MISSED"
                rows.append(f"| {name} | {sorted(statuses)} | {seconds:.3f} s | < {target:g} s | {verdict} |")
                print(rows[-1], flush=True)
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
    table = (
        f"Medians of {args.rounds} rounds, client-side, one uvicorn worker\n\n"
        "| hostile request | statuses | answer after | target | |\n| --- | --- | --- | --- | --- |\n"
        + "\n".join(rows)
        + "\n"
    )
    print(table)
    (ROOT / "bench" / "results").mkdir(exist_ok=True)
    (ROOT / "bench" / "results" / "refusals-latest.md").write_text(table)
    return 0 if all(row.endswith("| ok |") for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
