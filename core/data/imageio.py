"""Open any image a user is likely to upload and hand back a plain, fully loaded RGB image.

Everything that reads pixels from user files goes through `open_image`, so the rules live in one
place: EXIF orientation first, a pixel-count ceiling and a decoded-bytes ceiling checked from the
header before decoding, truncated files rejected rather than silently padded, and every colour mode
mapped to RGB in a way that keeps what the person saw (transparency becomes white, 16-bit data keeps
its contrast).

Memory holds under hostile files: a tiny PNG can declare 89 million 16-bit pixels, so the header's
size decides before a byte is decoded, wide-integer and float data are scaled in row chunks (never a
float64 copy of the whole image), and every decode in this process first reserves its estimated peak
from one byte budget (``TRANSFER_STUDIO_DECODE_BUDGET_MB``): many threads decoding at once wait for
each other instead of adding up.
"""

from __future__ import annotations

import io
import math
import os
import threading
import warnings
from pathlib import Path
from typing import BinaryIO, Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from core.data.message import Message, shown
from core.i18n import N_, _

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "DEFAULT_MAX_IMAGE_MB",
    "DEFAULT_DECODE_BUDGET_MB",
    "decode_budget_bytes",
    "decoded_bytes",
    "max_image_bytes",
    "IMAGE_EXTENSIONS",
    "MAX_PIXELS_ENV",
    "ImageError",
    "is_image_name",
    "max_pixels_limit",
    "open_image",
]

# Same ceiling Pillow uses by default, so the app is never laxer than the library it sits on.
DEFAULT_MAX_PIXELS = 89_478_485
MAX_PIXELS_ENV = "TRANSFER_STUDIO_MAX_PIXELS"
# 256 MiB is what the pixel ceiling allows for 8-bit RGB (89,478,485 x 3 bytes): ordinary photos at the
# pixel limit pass, wider samples (16-bit, float, CMYK, alpha) are held to the same memory.
DEFAULT_MAX_IMAGE_MB = 256
MAX_IMAGE_MB_ENV = "TRANSFER_STUDIO_MAX_IMAGE_MB"
# Peak bytes that all decodes in flight in this process may reserve together.
DEFAULT_DECODE_BUDGET_MB = 2048
DECODE_BUDGET_ENV = "TRANSFER_STUDIO_DECODE_BUDGET_MB"
_CHUNK_PIXELS = 1 << 20  # wide-sample conversions work on this many pixels at a time



def _optional_extensions() -> set[str]:
    """Formats whose decoders may be missing: HEIC/HEIF (iPhones' camera default) through pillow-heif, which
    registers its opener with Pillow here; AVIF where Pillow was built with it (its wheels since 11.3)."""
    found = set()
    try:
        import pillow_heif
    except ImportError:  # pip install pillow-heif (in requirements.txt) reads them
        pass
    else:
        pillow_heif.register_heif_opener()
        found |= {".heic", ".heif"}
    from PIL import features

    if features.check("avif"):
        found.add(".avif")
    return found


BASE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"})
IMAGE_EXTENSIONS = BASE_EXTENSIONS | _optional_extensions()

# Pillow applies its decompression-bomb filter through the process-wide warnings registry; the lock
# keeps our own threads (parallel dataset verification) from interleaving catch_warnings blocks.
_OPEN_LOCK = threading.Lock()

_WHITE = (255, 255, 255)
_ALPHA_MODES = {"LA", "La", "PA", "RGBA", "RGBa"}
_INT16_MODES = {"I;16", "I;16L", "I;16B", "I;16N"}

ImageSource = Union[str, os.PathLike, bytes, bytearray, memoryview, BinaryIO]


class ImageError(ValueError):
    """An image file that cannot be used; the message names the file and what to do.

    str(error) is in the language of the thread that raised it; ``message`` keeps the English Message (a skip
    reason stores it)."""

    def __init__(self, message: str):
        super().__init__(shown(message))
        self.message = message


def is_image_name(name: str | os.PathLike) -> bool:
    """True when the file name has a supported image extension (case-insensitive)."""
    base = os.path.basename(os.fspath(name))
    return os.path.splitext(base)[1].lower() in IMAGE_EXTENSIONS


def max_pixels_limit() -> int:
    """The pixel ceiling in force now: TRANSFER_STUDIO_MAX_PIXELS if set, else DEFAULT_MAX_PIXELS."""
    raw = os.environ.get(MAX_PIXELS_ENV, "").strip()
    if not raw:
        return DEFAULT_MAX_PIXELS
    try:
        value = int(raw.replace("_", ""))
    except ValueError:
        value = 0
    if value <= 0:
        raise ValueError(_("{env} must be a positive whole number of pixels, got {value} — set it like "
                           "{env}=50000000 or unset it to use {default}").format(
            env=MAX_PIXELS_ENV, value=repr(raw), default=f"{DEFAULT_MAX_PIXELS:,}"))
    return value


def _env_mb(env: str, default: int) -> int:
    raw = os.environ.get(env, "").strip()
    if not raw:
        return default * 1024**2
    try:
        value = float(raw.replace("_", ""))
    except ValueError:
        value = 0
    if value <= 0:
        raise ValueError(_("{env} must be a positive number of megabytes, got {value} — set it like {env}={default} "
                           "or unset it to use {default}").format(env=env, value=repr(raw), default=default))
    return int(value * 1024**2)


def max_image_bytes() -> int:
    """The decoded-size ceiling per image: TRANSFER_STUDIO_MAX_IMAGE_MB if set, else 256 MiB."""
    return _env_mb(MAX_IMAGE_MB_ENV, DEFAULT_MAX_IMAGE_MB)


def decode_budget_bytes() -> int:
    """Bytes all decodes in flight may reserve together: TRANSFER_STUDIO_DECODE_BUDGET_MB, else 2 GiB."""
    return _env_mb(DECODE_BUDGET_ENV, DEFAULT_DECODE_BUDGET_MB)


def _sample_bytes(mode: str) -> int:
    if mode.startswith("I;16"):
        return 2
    return 4 if mode in ("I", "F") else 1


def decoded_bytes(mode: str, width: int, height: int) -> int:
    """Bytes the pixel data takes once decoded: width x height x bands x bytes per sample."""
    try:
        bands = Image.getmodebands(mode)
    except (KeyError, ValueError):
        bands = 1  # a raw mode Pillow does not list; every such mode here holds one band
    return width * height * bands * _sample_bytes(mode)


def _peak_cost(mode: str, width: int, height: int) -> int:
    """An upper bound of what decoding and converting to RGB holds at once (Pillow keeps 1, 2 or 4 bytes
    a pixel; orientation may copy it; the RGB result takes 4; alpha compositing two more RGBA images)."""
    px = width * height
    stored = 1 if mode in ("1", "L", "P") else 2 if mode.startswith("I;16") else 4
    convert = 8 if mode in _ALPHA_MODES or mode == "P" else 1
    return px * (2 * stored + 4 + convert)


class _Budget:
    """Bytes reserved by decodes in flight; a decode waits until its estimate fits."""

    def __init__(self) -> None:
        self.used = 0
        self.cond = threading.Condition()

    def reserve(self, cost: int, total: int, name: str) -> None:
        if cost > total:
            raise ImageError(Message(
                N_("{name} would need about {need} MB to decode, more than the decode budget of {budget} MB — "
                   "downscale it, or raise {env} if the server has the memory"),
                name=name, need=f"{cost / 1024**2:,.0f}", budget=f"{total / 1024**2:,.0f}", env=DECODE_BUDGET_ENV))
        with self.cond:
            self.cond.wait_for(lambda: self.used + cost <= total)
            self.used += cost

    def release(self, cost: int) -> None:
        with self.cond:
            self.used -= cost
            self.cond.notify_all()


_BUDGET = _Budget()


REDUCING_GAP = 2  # a reduced decode keeps at least this multiple of the side asked for (Pillow's thumbnail default)


def open_image(source: ImageSource, max_pixels: int | None = None, min_side: int | None = None) -> Image.Image:
    """Open a path, bytes or binary file as a fully loaded RGB image, or raise ImageError.

    `max_pixels=None` means the limit from `max_pixels_limit()`, read at call time; the decoded-bytes
    ceiling (`max_image_bytes()`) and the decode budget apply as well, to the size the file declares.
    `min_side`: the caller shrinks the image to this shorter side anyway, so a JPEG may decode at 1/2, 1/4
    or 1/8 scale (Pillow's `draft`: the scaling happens inside the decoder) as long as its shorter side
    stays at least `REDUCING_GAP` x `min_side`. A 12-megapixel phone photo then decodes ~4x faster for a
    256-px square, within 0.3 of 255 grey levels on average of the full decode's result (see README
    "Measured"); other formats decode whole. Every byte is still decoded, so a truncated file still fails.
    The returned image's `info["source_mode"]` holds the mode the file was stored in and
    `info["source_size"]` the (width, height) it declares, EXIF orientation applied.
    """
    limit = max_pixels_limit() if max_pixels is None else int(max_pixels)
    name = display_name(source)
    fp, owned = _as_binary_file(source, name)
    try:
        _reject_empty(fp, name)
        with _open_header(fp, name, limit) as im:
            width, height = im.size
            if width * height > limit:
                raise ImageError(Message(
                    N_("{name} is {width}x{height} = {pixels} pixels, above the limit of {limit} — downscale it, "
                       "or raise {env} if you trust the file"),
                    name=name, width=width, height=height, pixels=f"{width * height:,}", limit=f"{limit:,}",
                    env=MAX_PIXELS_ENV))
            _check_decoded_bytes(im, name)
            if min_side:
                _reduce_decode(im, min_side)
            cost = _peak_cost(im.mode, *im.size)
            _BUDGET.reserve(cost, decode_budget_bytes(), name)
            try:
                # GIF/WebP/TIFF animations: the classifier sees the first frame only.
                _load_fully(im, name)
                source_mode = im.mode
                decoded = im.size
                oriented = _apply_orientation(im)
                if oriented.size != decoded and oriented.size == decoded[::-1]:  # EXIF turned it a quarter
                    width, height = height, width
                rgb = _to_rgb(oriented, name)
                del oriented
                if rgb is im:
                    rgb = im.copy()
            finally:
                _BUDGET.release(cost)
    finally:
        if owned:
            fp.close()
    rgb.info = {"source_mode": source_mode, "source_size": (width, height)}
    return rgb


def _reduce_decode(im: Image.Image, min_side: int) -> None:
    """Ask the decoder for the smallest scale whose shorter side is still >= REDUCING_GAP * min_side (JPEG only;
    a no-op for formats without reduced decoding)."""
    width, height = im.size
    scale = REDUCING_GAP * min_side / max(1, min(width, height))
    if scale > 0.5:  # even half the size would be smaller than asked: decode whole
        return
    im.draft(None, (math.ceil(width * scale), math.ceil(height * scale)))


def _check_decoded_bytes(im: Image.Image, name: str) -> None:
    width, height = im.size
    need, cap = decoded_bytes(im.mode, width, height), max_image_bytes()
    if need > cap:
        raise ImageError(Message(
            N_("{name} is {width}x{height} in mode {mode}, which decodes to {need} MB, above the per-image limit "
               "of {cap} MB — downscale it, or raise {env} if you trust the file"),
            name=name, width=width, height=height, mode=im.mode, need=f"{need / 1024**2:,.0f}",
            cap=f"{cap / 1024**2:,.0f}", env=MAX_IMAGE_MB_ENV))


def display_name(source: object, default: str = "the uploaded image") -> str:
    """The file name to show in messages for a path or an uploaded file object."""
    if isinstance(source, (str, os.PathLike)):
        return Path(os.fspath(source)).name or os.fspath(source)
    raw_name = getattr(source, "name", None)
    if isinstance(raw_name, str) and raw_name:
        return os.path.basename(raw_name) or raw_name
    return default


def _as_binary_file(source: ImageSource, name: str) -> tuple[BinaryIO, bool]:
    """Return (seekable binary file, whether we opened it and must close it)."""
    if isinstance(source, (str, os.PathLike)):
        try:
            return open(source, "rb"), True
        except FileNotFoundError:
            raise ImageError(Message(N_("{name} does not exist — check the path"), name=name)) from None
        except IsADirectoryError:
            raise ImageError(Message(N_("{name} is a folder, not an image file — pass a file"), name=name)) from None
        except OSError as exc:
            raise ImageError(Message(N_("{name} cannot be read ({error}) — check its permissions"), name=name,
                                     error=str(exc.strerror))) from None
    if isinstance(source, (bytes, bytearray, memoryview)):
        return io.BytesIO(bytes(source)), True
    if not hasattr(source, "read"):
        raise ImageError(
            f"expected a file path, bytes or a binary file object, got {type(source).__name__} "
            f"— pass the image's path or its bytes"
        )
    seekable = getattr(source, "seekable", None)
    if callable(seekable) and seekable():
        return source, False
    # Pillow needs to seek; a pipe or network stream is copied once into memory.
    return io.BytesIO(source.read()), True


def _reject_empty(fp: BinaryIO, name: str) -> None:
    start = fp.tell()
    first = fp.read(1)
    fp.seek(start)
    if not first:
        raise ImageError(Message(N_("{name} is empty (0 bytes) — re-export or re-download it"), name=name))


def _open_header(fp: BinaryIO, name: str, limit: int) -> Image.Image:
    # Pillow's own bomb check fires inside Image.open as a warning (or error at 2x its limit).
    # When our ceiling is at or below Pillow's, escalate the warning so it becomes our ImageError;
    # when the user deliberately raised our ceiling above Pillow's, our check alone decides.
    action = "error" if limit <= (Image.MAX_IMAGE_PIXELS or limit) else "ignore"
    try:
        with _OPEN_LOCK, warnings.catch_warnings():
            warnings.simplefilter(action, Image.DecompressionBombWarning)
            return Image.open(fp)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError(Message(
            N_("{name} is too large to decode safely ({error}) — downscale it, or raise {env} if you trust the file"),
            name=name, error=str(exc), env=MAX_PIXELS_ENV)) from None
    except UnidentifiedImageError:
        supported = ", ".join(sorted(IMAGE_EXTENSIONS))
        raise ImageError(Message(
            N_("{name} is not a recognised image (expected one of {types}) — re-save it as PNG or JPEG, or remove it"),
            name=name, types=supported)) from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageError(Message(_CORRUPT, name=name, error=str(exc))) from None


_CORRUPT = N_("{name} is truncated or corrupt ({error}) — re-export or re-download it, or remove it")


def _load_fully(im: Image.Image, name: str) -> None:
    try:
        im.load()
    except Image.DecompressionBombError as exc:
        raise ImageError(Message(N_("{name} is too large to decode safely ({error}) — downscale it"), name=name,
                                 error=str(exc))) from None
    except Exception as exc:  # decoders raise OSError, SyntaxError, struct.error, zlib.error, ...
        detail = str(exc) or type(exc).__name__
        raise ImageError(Message(_CORRUPT, name=name, error=detail)) from None


def _apply_orientation(im: Image.Image) -> Image.Image:
    try:
        oriented = ImageOps.exif_transpose(im)
    except Exception:
        # A malformed EXIF block should not cost the user a perfectly decodable photo.
        return im
    return im if oriented is None else oriented


def _to_rgb(im: Image.Image, name: str) -> Image.Image:
    mode = im.mode
    if mode == "RGB" and "transparency" not in im.info:
        return im
    if mode in _INT16_MODES:
        # 65535 is white in 16-bit data; 257 maps it exactly onto 255 and keeps mid-grey at 127.
        # (v + 128) // 257 is round(v / 257) in integers: no float copy of the image.
        return _chunked_to_rgb(im, lambda v: (v.astype(np.uint32) + 128) // 257)
    if mode == "I":
        low, high = _chunked_range(im, float_data=False)
        if low >= 0 and high <= 65535:
            return _chunked_to_rgb(im, lambda v: (v.astype(np.int64) + 128) // 257)
        return _chunked_to_rgb(im, lambda v: _stretch(v.astype(np.float64), low, high))
    if mode == "F":
        return _chunked_to_rgb(im, _float_scaler(*_chunked_range(im, float_data=True)))
    if mode in _ALPHA_MODES or "transparency" in im.info:
        return _composite_on_white(im.convert("RGBA"))
    if mode == "P":
        return im.convert("RGB")
    try:
        return im.convert("RGB")
    except (ValueError, OSError) as exc:
        raise ImageError(Message(
            N_("{name} uses colour mode {mode}, which cannot be converted to RGB ({error}) — re-save it as an "
               "8-bit RGB PNG or JPEG"), name=name, mode=repr(mode), error=str(exc))) from None


def _row_chunks(im: Image.Image):
    """NumPy arrays of consecutive row bands of ``im``, about _CHUNK_PIXELS pixels each."""
    width, height = im.size
    step = max(1, _CHUNK_PIXELS // max(width, 1))
    for top in range(0, height, step):
        yield top, np.asarray(im.crop((0, top, width, min(top + step, height))))


def _chunked_range(im: Image.Image, float_data: bool) -> tuple[float, float]:
    # Pillow stores 16-bit greyscale in mode "I" for some formats; values that fit in 16 bits are
    # treated as such. Wider data has no fixed white point, so its own range is stretched.
    low, high = np.inf, -np.inf
    for _top, band in _row_chunks(im):
        if float_data:
            band = np.nan_to_num(band.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
        if band.size:
            low, high = min(low, float(band.min())), max(high, float(band.max()))
    return (0.0, 0.0) if low > high else (low, high)


def _float_scaler(low: float, high: float):
    def scale(band: np.ndarray) -> np.ndarray:
        band = np.nan_to_num(band.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
        if low >= 0.0 and high <= 1.0:
            return band * 255.0  # normalised float images (0..1)
        if low >= 0.0 and high <= 255.0:
            return band
        return _stretch(band, low, high)
    return scale


def _stretch(values: np.ndarray, low: float, high: float) -> np.ndarray:
    if high <= low:
        return np.zeros_like(values)
    return (values - low) * (255.0 / (high - low))


def _chunked_to_rgb(im: Image.Image, scale) -> Image.Image:
    """Greyscale of any sample width to RGB, scaling one row band at a time into a uint8 buffer."""
    width, height = im.size
    gray = np.empty((height, width), dtype=np.uint8)
    for top, band in _row_chunks(im):
        values = scale(band)
        if values.dtype.kind == "f":
            values = np.rint(values)
        gray[top:top + band.shape[0]] = np.clip(values, 0, 255).astype(np.uint8)
    return Image.fromarray(gray).convert("RGB")


def _composite_on_white(rgba: Image.Image) -> Image.Image:
    # Dropping alpha would reveal whatever colour hides under transparent pixels (often black or
    # garbage); compositing shows the image the way a browser or viewer does.
    background = Image.new("RGBA", rgba.size, _WHITE + (255,))
    return Image.alpha_composite(background, rgba).convert("RGB")
