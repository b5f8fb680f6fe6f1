"""One image file -> the RGB uint8 array the models train on, whatever the file holds; and which files are not images.

What a real folder holds, and what becomes of it:
- 8- and 16-bit, grayscale, palette, CMYK: converted to 8-bit RGB. 16-bit values are scaled (x 255 / 65535), not
  clipped at 255 as PIL's `convert("RGB")` does for 16-bit grayscale.
- alpha (RGBA, LA, PA, palette or RGB with a transparent colour): composited over white (`BACKGROUND`): what image
  viewers and documents show behind transparent pixels, and the same for every data set (the data set's mean colour
  would make the stored pixels depend on which other images are in the folder).
- EXIF orientation (phone photos): applied, so the stored image is upright as every viewer shows it.
- any size and aspect ratio: the shorter side is resized to N, then the centre N x N is cropped (`ImageOps.fit`).
  torchvision's evaluation transform does the same (Resize(N) + CenterCrop(N)): objects keep their shape, only the
  edges of the longer side are lost. Padding would keep the edges but spend pixels on borders the model has to learn
  to ignore, with a border width that differs by aspect ratio; squashing (the old behaviour) distorts shapes.
- not readable (truncated, corrupt, zero bytes, not an image, larger than `Image.MAX_IMAGE_PIXELS`, a macOS `._*`
  AppleDouble or another hidden file): `BadImage` with a short reason; the data loader skips or refuses it.
"""

from __future__ import annotations

import struct
import warnings
from contextlib import contextmanager
from pathlib import Path

import numpy as np

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff")
BACKGROUND = (255, 255, 255)  # behind transparent pixels; see the module docstring

# Reasons a file is skipped, as recorded in experiment.json (short: they are counted on one console line).
APPLEDOUBLE, HIDDEN, EMPTY, NOT_IMAGE = "AppleDouble", "hidden", "empty", "not an image"
TRUNCATED, CORRUPT, TOO_LARGE = "truncated", "corrupt", "too large"
# A folder inside a class folder: not read (its images would need a class of their own, or to move up one level).
SUBFOLDER = "subfolder, not read"


class BadImage(Exception):
    """A file that cannot be used as an image: `reason` is one of the constants above, `detail` says more."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason, self.detail = reason, detail


def listing_reason(name: str, size: int) -> str | None:
    """Why a file of a class folder is skipped without opening it (None: try to decode it)."""
    if name.startswith("._"):  # macOS resource forks, left next to every file by archives unpacked from a Mac
        return APPLEDOUBLE
    if name.startswith("."):  # .DS_Store, editor swap files, ...
        return HIDDEN
    if not name.lower().endswith(IMAGE_EXTENSIONS):
        return NOT_IMAGE
    if size == 0:
        return EMPTY
    return None


def pixel_limit() -> int | None:
    """PIL's decompression-bomb limit (89,478,485 pixels by default; raise Image.MAX_IMAGE_PIXELS to allow more)."""
    from PIL import Image

    return Image.MAX_IMAGE_PIXELS


@contextmanager
def bomb_warnings_as_errors():
    """PIL's DecompressionBombWarning (1x-2x the pixel limit) raises, like its error (over 2x), in this block.

    Enter it in the thread that starts the decoding threads: the warnings filter list is process-wide."""
    from PIL import Image

    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        yield


def decode(path: Path, size: int) -> np.ndarray:
    """(3, size, size) uint8 RGB of the image file at `path`, or BadImage."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    limit = pixel_limit()
    try:
        if Path(path).stat().st_size == 0:  # what PIL would call "cannot identify"; the listing's own reason
            raise BadImage(EMPTY, "zero bytes")
        with Image.open(path) as im:
            if limit and im.width * im.height > limit:
                raise BadImage(TOO_LARGE, f"{im.width}x{im.height} px, over the {limit:,}-pixel limit")
            # JPEG: decode at 1/2, 1/4 or 1/8 scale while both sides stay >= size (several times faster for photos).
            im.draft(None, (size, size))
            im.load()  # inside the try: a truncated file fails here (LOAD_TRUNCATED_IMAGES stays off)
            try:
                im = ImageOps.exif_transpose(im)
            except Exception:  # unreadable EXIF block: the pixels are fine, keep them as stored
                pass
            rgb = to_rgb(im)
    except BadImage:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise BadImage(TOO_LARGE, _first_line(e)) from None
    except UnidentifiedImageError:
        raise BadImage(NOT_IMAGE, "PIL cannot identify it") from None
    except (OSError, SyntaxError, ValueError, EOFError, struct.error) as e:  # PIL's ways of saying "broken file"
        text = _first_line(e)
        raise BadImage(TRUNCATED if "truncated" in text.lower() else CORRUPT, text) from None
    if rgb.size != (size, size):
        rgb = ImageOps.fit(rgb, (size, size), Image.BILINEAR)  # shorter side -> size, centre crop (docstring)
    return np.asarray(rgb, dtype=np.uint8).transpose(2, 0, 1)


def to_rgb(im):
    """8-bit RGB PIL image from any PIL mode (see the module docstring)."""
    from PIL import Image

    if im.mode.startswith("I"):  # "I;16*" (16-bit PNG/TIFF); "I" (32-bit) is read as 16-bit, as PIL stores them
        a = np.clip(np.asarray(im, dtype=np.float64), 0, 65535)
        return Image.fromarray(np.round(a * (255 / 65535)).astype(np.uint8), "L").convert("RGB")
    has_alpha = im.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in im.info
    if has_alpha:
        rgba = im.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (*BACKGROUND, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return im if im.mode == "RGB" else im.convert("RGB")  # L, 1, P, CMYK, YCbCr, LAB, HSV


def native_side(path: Path) -> int | None:
    """The shorter side of the image at `path` from its header alone (None: unreadable)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            return min(im.size)
    except Exception:
        return None


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return (text.splitlines()[0] if text else type(e).__name__)[:100]
