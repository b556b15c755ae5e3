"""Make the sample files in samples/ from data/mnist-sample.npz.

    python scripts/make_samples.py [--data data/mnist-sample.npz]

- test_img0.png: the first hold-out digit, 28x28 grey, as in the original tutorial;
- digit_dark_on_light.jpg: the same kind of digit as a large RGB photo-like image, dark ink on light paper;
- digit_rgba.png: a digit drawn in black on a transparent background;
- retrain_img.zip: 1,000 labelled training images (none from the hold-out set) in the
  tutorial's format: PNG files plus labels.txt, labels in the order of the sorted names.
"""

import argparse
import io
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

ROOT = Path(__file__).resolve().parent.parent
RETRAIN_IMAGES = 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=ROOT / "data" / "mnist-sample.npz")
    parser.add_argument("--out", type=Path, default=ROOT / "samples")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with np.load(args.data) as data:
        x_train, y_train, x_test, y_test = data["x_train"], data["y_train"], data["x_test"], data["y_test"]

    Image.fromarray(x_test[0]).save(args.out / "test_img0.png", optimize=True)
    print(f"test_img0.png: a {y_test[0]}")

    big = Image.fromarray(255 - x_test[1]).resize((420, 420), Image.Resampling.BICUBIC)
    paper = Image.new("RGB", (600, 520), (236, 230, 214))
    ink = Image.merge("RGB", [big.point(lambda v: v * 0.85 + 30)] * 3)
    paper.paste(ink, (120, 40), mask=Image.fromarray(255 - np.asarray(big)).filter(ImageFilter.GaussianBlur(1)))
    paper.save(args.out / "digit_dark_on_light.jpg", quality=85)
    print(f"digit_dark_on_light.jpg: a {y_test[1]}")

    alpha = Image.fromarray(x_test[2]).resize((200, 200), Image.Resampling.BICUBIC)
    black = Image.new("L", alpha.size, 0)
    Image.merge("RGBA", [black, black, black, alpha]).save(args.out / "digit_rgba.png", optimize=True)
    print(f"digit_rgba.png: a {y_test[2]}")

    write_retrain_zip(args.out / "retrain_img.zip", x_train[-RETRAIN_IMAGES:], y_train[-RETRAIN_IMAGES:])
    print(f"retrain_img.zip: {RETRAIN_IMAGES} images from the training split")


def write_retrain_zip(path: Path, images: np.ndarray, labels: np.ndarray) -> None:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for index, image in enumerate(images):
            buffer = io.BytesIO()
            Image.fromarray(image).save(buffer, format="PNG", optimize=True)
            # Fixed timestamps: the same data makes the same bytes.
            archive.writestr(
                zipfile.ZipInfo(f"img_{index:04d}.png", date_time=(2024, 1, 1, 0, 0, 0)),
                buffer.getvalue(),
                compress_type=zipfile.ZIP_DEFLATED,
            )
        labels_text = " ".join(str(int(label)) for label in labels) + "\n"
        archive.writestr(
            zipfile.ZipInfo("labels.txt", date_time=(2024, 1, 1, 0, 0, 0)),
            labels_text,
            compress_type=zipfile.ZIP_DEFLATED,
        )


if __name__ == "__main__":
    main()
