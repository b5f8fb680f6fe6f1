"""Generated files of every kind a real image folder holds: odd but usable (16-bit, palette, alpha, CMYK, EXIF-rotated,
not square) and unusable (truncated, bad CRC, empty, not an image, AppleDouble, hidden, decompression bomb).

Each usable file is one flat colour (or two halves), so a test can check what decoding made of it."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
from sample_data import write_image_folder

# name -> expected RGB of the decoded image (centre pixel), for the odd-but-usable files
ODD_EXPECTED = {
    "gray16.png": (128, 128, 128),  # 16-bit 32896 -> 128 (PIL's convert("RGB") clips it to 255)
    "rgb16.png": (156, 1, 255),  # 16-bit RGB (40000, 300, 65535)
    "gray8.png": (100, 100, 100),
    "palette.png": (10, 200, 30),
    "palette_transparent.png": (255, 255, 255),  # the transparent index shows the white background
    "rgba_half.png": (255, 128, 128),  # red at alpha 127 over white
    "la_clear.png": (255, 255, 255),  # black at alpha 0 over white
    "cmyk.jpg": (255, 0, 0),  # CMYK (0, 255, 255, 0) is red
}
# bad file name -> reason recorded for it
BAD_EXPECTED = {
    "truncated.jpg": "truncated",
    "bad_crc.png": "corrupt",
    "empty.jpg": "empty",
    "text.png": "not an image",
    "notes.txt": "not an image",
    "._0001.png": "AppleDouble",
    ".DS_Store": "hidden",
    "bomb.png": "too large",
}


def png16(arr: np.ndarray) -> bytes:
    """A 16-bit PNG (grayscale HxW or RGB HxWx3) written by hand: PIL cannot write 16-bit RGB."""
    arr = arr if arr.ndim == 3 else arr[..., None]
    h, w, c = arr.shape
    raw = b"".join(b"\0" + arr[y].astype(">u2").tobytes() for y in range(h))

    def chunk(t: bytes, d: bytes) -> bytes:
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", w, h, 16, {1: 0, 3: 2}[c], 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def write_odd_files(d: Path, size: int = 40) -> None:
    from PIL import Image

    d.mkdir(parents=True, exist_ok=True)
    (d / "gray16.png").write_bytes(png16(np.full((size, size), 32896, np.uint16)))
    rgb16 = np.zeros((size, size, 3), np.uint16)
    rgb16[...] = (40000, 300, 65535)
    (d / "rgb16.png").write_bytes(png16(rgb16))
    Image.new("L", (size, size), 100).save(d / "gray8.png")
    p = Image.new("P", (size, size), 1)
    p.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    p.save(d / "palette.png")
    p.save(d / "palette_transparent.png", transparency=1)
    Image.new("RGBA", (size, size), (255, 0, 0, 127)).save(d / "rgba_half.png")
    Image.new("LA", (size, size), (0, 0)).save(d / "la_clear.png")
    Image.new("CMYK", (size, size), (0, 255, 255, 0)).save(d / "cmyk.jpg", quality=95)
    write_exif_rotated(d / "exif_rotated.jpg", size)


def write_exif_rotated(path: Path, size: int) -> None:
    """Stored 2*size wide x size tall, left half red, right half blue, EXIF orientation 6 (rotate 90° clockwise to
    show): upright it is size wide x 2*size tall, red on top, blue below."""
    from PIL import Image

    a = np.zeros((size, 2 * size, 3), np.uint8)
    a[:, :size] = (255, 0, 0)
    a[:, size:] = (0, 0, 255)
    im = Image.fromarray(a)
    exif = im.getexif()
    exif[0x0112] = 6
    im.save(path, quality=95, exif=exif)


def write_bad_files(d: Path) -> None:
    from PIL import Image

    d.mkdir(parents=True, exist_ok=True)
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(noise).save(d / "truncated.jpg", quality=90)
    data = (d / "truncated.jpg").read_bytes()
    (d / "truncated.jpg").write_bytes(data[: len(data) // 2])
    Image.fromarray(noise).save(d / "bad_crc.png")
    png = bytearray((d / "bad_crc.png").read_bytes())
    at = png.index(b"IDAT") + 20
    png[at] ^= 0xFF  # one flipped byte inside the image data: its CRC no longer matches
    (d / "bad_crc.png").write_bytes(bytes(png))
    (d / "empty.jpg").write_bytes(b"")
    (d / "text.png").write_text("not a PNG at all")
    (d / "notes.txt").write_text("labelling-tool notes")
    (d / "._0001.png").write_bytes(b"\x00\x05\x16\x07AppleDouble resource fork")
    (d / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    # 9,500 x 9,500 = 90.25 M pixels, over PIL's 89.5 M limit (its warning range); 1-bit: a few kB on disk
    Image.new("1", (9500, 9500)).save(d / "bomb.png")


def odd_folder(root: Path) -> Path:
    """A small good folder plus every bad and every odd file of tests/odd_images.py in train/cat."""
    folder = write_image_folder(root, n_train=6, n_test=3)
    write_bad_files(folder / "train" / "cat")
    write_odd_files(folder / "train" / "cat")
    return folder
