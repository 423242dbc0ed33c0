#!/usr/bin/python3
"""Writes the image fixtures under tests/data/image/ and seeds fuzz/corpus/image/.

Run with Debian's Python, which has Pillow and numpy as system packages:
    apt-get install -y python3-pil python3-numpy
    /usr/bin/python3 tools/golden/make_image_fixtures.py

The references are what Pillow (and the timm/torchvision eval transform, rewritten here with
Pillow + numpy because torchvision is not installed) produce, so that the C++ tests check that
src/io/resample.cpp reproduces them bit for bit. Everything is deterministic: re-running the script
with the same Pillow and numpy rewrites identical files.

Files (all sizes in pixels, W x H):
  photo.png         97x71 synthetic photo-like RGB image (gradients, shapes, noise, saturated areas)
  photo.jpg         the same image as JPEG (quality 90, 4:2:0)
  photo_jpg_pil.png Pillow's (libjpeg's) decode of photo.jpg, stored losslessly
  photo_progressive.jpg, photo_444.jpg  the photo as a progressive JPEG (4:2:0) and as a 4:4:4 one
  grey.jpg          grey.png as a one-channel JPEG
  cmyk.jpg          the photo as a CMYK JPEG (decoded by stb_image, not libjpeg-turbo)
  grey.png          13x9 L, value (17x + 29y) % 256
  rgba.png          11x7 RGBA, RGB (20x, 30y, 7x + 11y) % 256, alpha (37(x + y)) % 256
  palette.png       9x5 P with the 4 colours of PALETTE, index (x + 2y) % 4
  refs.txt          one line per check, see below
  resize_*.bin      raw uint8 RGB outputs of Pillow's resize for the small cases
  eval_*.f32        raw little-endian float32 HWC outputs of the eval transform

refs.txt lines (space separated):
  decode NAME W H FNV1A64           Pillow's RGB pixels of NAME
  resize SW SH DW DH FILTER FNV1A64 Image.resize((DW, DH), FILTER) of the SW x SH source
  eval NAME SIZE CROP_PCT INTERP CROP_MODE MEAN0 MEAN1 MEAN2 STD0 STD1 STD2
The resize source of size SW x SH tiles photo.png from its top-left corner: pixel (x, y) is
photo[y % 71, x % 97], which the C++ test rebuilds from the decoded PNG.
"""

import math
import os
import sys

import numpy as np
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(ROOT, "tests", "data", "image")
CORPUS = os.path.join(ROOT, "fuzz", "corpus", "image")

PALETTE = [(255, 0, 0), (0, 128, 255), (30, 200, 40), (250, 250, 250)]
FILTERS = {"nearest": Image.NEAREST, "bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC}
SMALL_BIN_LIMIT = 2048  # bytes; larger resize outputs are checked through their hash only

RESIZE_CASES = [
    # (src_w, src_h, dst_w, dst_h, filters)
    (37, 23, 13, 29, ("bicubic", "bilinear", "nearest")),  # down in x, up in y, odd sizes
    (50, 40, 224, 224, ("bicubic", "bilinear", "nearest")),  # up in both
    (300, 200, 7, 5, ("bicubic", "bilinear", "nearest")),  # strong antialiased downscale
    (300, 200, 248, 165, ("bicubic", "bilinear")),  # the typical eval-size downscale
    (97, 71, 150, 71, ("bicubic", "nearest")),  # horizontal only, up
    (97, 71, 40, 71, ("bilinear",)),  # horizontal only, down
    (97, 71, 97, 30, ("bicubic",)),  # vertical only, down
    (97, 71, 97, 200, ("bilinear", "nearest")),  # vertical only, up
    (64, 48, 16, 12, ("bicubic", "nearest")),  # integer factor
    (97, 71, 1, 1, ("bicubic", "bilinear", "nearest")),
    (1, 1, 5, 3, ("bicubic", "bilinear", "nearest")),
    (2, 3, 1, 7, ("bicubic", "nearest")),
    # Nearest cases where floor((x + 0.5) * in / out) and Pillow disagree: Pillow accumulates the
    # source position by repeated addition in double and lands just below an integer.
    (348, 1, 1479, 1, ("nearest",)),
    (32, 2, 50, 56, ("nearest",)),
]

IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
HALF = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
EVAL_CASES = [
    # (name, size, crop_pct, interpolation, crop_mode, (mean, std))
    ("center_090", 24, 0.9, "bicubic", "center", IMAGENET),  # 97x71 -> 35x26, crop offsets (6, 1)
    ("center_100", 16, 1.0, "bilinear", "center", IMAGENET),  # 97x71 -> 21x16, crop offsets (2, 0)
    ("squash_0875", 16, 0.875, "bicubic", "squash", HALF),  # 97x71 -> 18x18, crop offsets (1, 1)
    ("center_120", 16, 1.2, "bicubic", "center", IMAGENET),  # 97x71 -> 17x13: crop pads 1 + 2 rows
]


def fnv1a64(data: bytes) -> str:
    h = 0xCBF29CE484222325
    for b in data:
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return f"{h:016x}"


def make_photo(w=97, h=71) -> np.ndarray:
    rng = np.random.default_rng(20240611)
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    img = np.zeros((h, w, 3))
    # Sky-like vertical gradient over a warm horizontal one.
    img[..., 0] = 60 + 150 * x / w
    img[..., 1] = 90 + 100 * y / h
    img[..., 2] = 220 - 120 * y / h + 20 * np.sin(x / 7.0)
    # A soft disc, a hard-edged saturated rectangle (bicubic rings and clips there) and a stripe.
    disc = np.exp(-(((x - 62) / 14.0) ** 2 + ((y - 24) / 11.0) ** 2))
    img = img * (1 - disc[..., None]) + np.array([250, 220, 40]) * disc[..., None]
    img[40:60, 10:35] = (255, 255, 255)
    img[44:56, 14:31] = (0, 0, 0)
    stripe = np.abs((x - 1.3 * y) - 20) < 3
    img[stripe] = (200, 30, 30)
    img += rng.normal(0, 6, img.shape)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def tiled(photo: np.ndarray, w: int, h: int) -> np.ndarray:
    ph, pw = photo.shape[:2]
    ys = np.arange(h) % ph
    xs = np.arange(w) % pw
    return np.ascontiguousarray(photo[np.ix_(ys, xs)])


def center_crop(img: Image.Image, size: int) -> Image.Image:
    """torchvision.transforms.functional.center_crop on a PIL image (pads with 0 when too small)."""
    w, h = img.size
    if size > w or size > h:
        pad_l = (size - w) // 2 if size > w else 0
        pad_t = (size - h) // 2 if size > h else 0
        pad_r = (size - w + 1) // 2 if size > w else 0
        pad_b = (size - h + 1) // 2 if size > h else 0
        canvas = Image.new(img.mode, (w + pad_l + pad_r, h + pad_t + pad_b), 0)
        canvas.paste(img, (pad_l, pad_t))
        img = canvas
        w, h = img.size
        if w == size and h == size:
            return img
    top = int(round((h - size) / 2.0))
    left = int(round((w - size) / 2.0))
    return img.crop((left, top, left + size, top + size))


def eval_transform(img: Image.Image, size, crop_pct, interp, crop_mode, mean, std) -> np.ndarray:
    """timm 1.0 transforms_eval (scale_size = floor(size / crop_pct)) + torchvision ToTensor/Normalize."""
    scale = math.floor(size / crop_pct)
    w, h = img.size
    if crop_mode == "squash":
        out_w, out_h = scale, scale
    else:  # torchvision Resize(int): shorter side -> scale, longer side -> int(scale * long / short)
        short, long = (w, h) if w <= h else (h, w)
        new_short, new_long = scale, int(scale * long / short)
        out_w, out_h = (new_short, new_long) if w <= h else (new_long, new_short)
    if (out_w, out_h) != (w, h):
        img = img.resize((out_w, out_h), FILTERS[interp])
    img = center_crop(img, size)
    # ToTensor: uint8 -> float32, then a float32 division by 255; Normalize: float32 (x - m) / s.
    x = np.asarray(img, dtype=np.uint8).astype(np.float32) / np.float32(255)
    m = np.array(mean, dtype=np.float32)
    s = np.array(std, dtype=np.float32)
    return ((x - m) / s).astype("<f4")


def save_png(arr_or_img, path):
    img = arr_or_img if isinstance(arr_or_img, Image.Image) else Image.fromarray(arr_or_img)
    img.save(path, format="PNG", optimize=True)


def main():
    os.makedirs(OUT, exist_ok=True)
    os.makedirs(CORPUS, exist_ok=True)
    for f in os.listdir(OUT):
        os.remove(os.path.join(OUT, f))
    refs = ["# Generated by tools/golden/make_image_fixtures.py with Pillow "
            f"{Image.__version__} and numpy {np.__version__}; do not edit."]

    photo = make_photo()
    save_png(photo, os.path.join(OUT, "photo.png"))
    Image.fromarray(photo).save(os.path.join(OUT, "photo.jpg"), format="JPEG", quality=90, subsampling=2)
    jpg = Image.open(os.path.join(OUT, "photo.jpg")).convert("RGB")
    save_png(jpg, os.path.join(OUT, "photo_jpg_pil.png"))
    Image.fromarray(photo).save(os.path.join(OUT, "photo_progressive.jpg"), format="JPEG", quality=90, subsampling=2,
                                progressive=True)
    Image.fromarray(photo).save(os.path.join(OUT, "photo_444.jpg"), format="JPEG", quality=90, subsampling=0)
    Image.fromarray(photo).convert("CMYK").save(os.path.join(OUT, "cmyk.jpg"), format="JPEG", quality=90)

    y, x = np.mgrid[0:9, 0:13]
    grey = ((17 * x + 29 * y) % 256).astype(np.uint8)
    save_png(Image.fromarray(grey, "L"), os.path.join(OUT, "grey.png"))
    Image.fromarray(grey, "L").save(os.path.join(OUT, "grey.jpg"), format="JPEG", quality=90)
    y, x = np.mgrid[0:7, 0:11]
    rgba = np.stack([(20 * x) % 256, (30 * y) % 256, (7 * x + 11 * y) % 256, (37 * (x + y)) % 256], -1)
    save_png(Image.fromarray(rgba.astype(np.uint8), "RGBA"), os.path.join(OUT, "rgba.png"))
    y, x = np.mgrid[0:5, 0:9]
    pal = Image.fromarray(((x + 2 * y) % 4).astype(np.uint8), "P")
    pal.putpalette([c for rgb in PALETTE for c in rgb])
    save_png(pal, os.path.join(OUT, "palette.png"))

    for name in ("photo.png", "photo.jpg", "photo_progressive.jpg", "photo_444.jpg", "grey.jpg", "grey.png",
                 "rgba.png", "palette.png"):
        im = Image.open(os.path.join(OUT, name)).convert("RGB")
        refs.append(f"decode {name} {im.width} {im.height} {fnv1a64(im.tobytes())}")

    for sw, sh, dw, dh, filters in RESIZE_CASES:
        src = Image.fromarray(tiled(photo, sw, sh))
        for f in filters:
            out = src.resize((dw, dh), FILTERS[f]).tobytes()
            refs.append(f"resize {sw} {sh} {dw} {dh} {f} {fnv1a64(out)}")
            if len(out) <= SMALL_BIN_LIMIT:
                with open(os.path.join(OUT, f"resize_{sw}x{sh}_{dw}x{dh}_{f}.bin"), "wb") as fh:
                    fh.write(out)

    src = Image.open(os.path.join(OUT, "photo.png")).convert("RGB")
    for name, size, crop_pct, interp, mode, (mean, std) in EVAL_CASES:
        out = eval_transform(src, size, crop_pct, interp, mode, mean, std)
        assert out.shape == (size, size, 3)
        with open(os.path.join(OUT, f"eval_{name}.f32"), "wb") as fh:
            fh.write(out.tobytes())
        refs.append(f"eval {name} {size} {crop_pct!r} {interp} {mode} "
                    + " ".join(repr(v) for v in mean) + " " + " ".join(repr(v) for v in std))

    with open(os.path.join(OUT, "refs.txt"), "w") as fh:
        fh.write("\n".join(refs) + "\n")

    # Fuzz seeds: the small images, and truncated copies that stop inside the compressed data.
    for name in ("photo.png", "photo.jpg", "photo_progressive.jpg", "grey.jpg", "cmyk.jpg", "grey.png", "rgba.png",
                 "palette.png"):
        with open(os.path.join(OUT, name), "rb") as fh:
            data = fh.read()
        with open(os.path.join(CORPUS, name), "wb") as fh:
            fh.write(data)
    for name in ("photo.png", "photo.jpg"):
        with open(os.path.join(OUT, name), "rb") as fh:
            data = fh.read()
        stem, ext = os.path.splitext(name)
        with open(os.path.join(CORPUS, f"{stem}_truncated{ext}"), "wb") as fh:
            fh.write(data[: len(data) // 2])

    total = sum(os.path.getsize(os.path.join(OUT, f)) for f in os.listdir(OUT))
    print(f"wrote {len(os.listdir(OUT))} files, {total} bytes, to {OUT}", file=sys.stderr)


if __name__ == "__main__":
    main()
