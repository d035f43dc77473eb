"""open_image: every format and colour mode users upload comes back as a loaded RGB image."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageFile

from core.data.imageio import (
    DEFAULT_MAX_PIXELS,
    IMAGE_EXTENSIONS,
    MAX_PIXELS_ENV,
    ImageError,
    is_image_name,
    max_pixels_limit,
    open_image,
)


def _encode(image: Image.Image, fmt: str, **params) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **params)
    return buf.getvalue()


def _write(path, image: Image.Image, fmt: str, **params):
    path.write_bytes(_encode(image, fmt, **params))
    return path


@pytest.fixture(autouse=True)
def _no_env_limit(monkeypatch):
    monkeypatch.delenv(MAX_PIXELS_ENV, raising=False)


# ---- formats


@pytest.mark.parametrize("fmt,suffix", [("PNG", ".png"), ("BMP", ".bmp"), ("TIFF", ".tif"), ("WEBP", ".webp")])
def test_lossless_formats_round_trip_to_rgb(tmp_path, fmt, suffix):
    source = Image.new("RGB", (6, 4), (10, 200, 30))
    params = {"lossless": True} if fmt == "WEBP" else {}
    path = _write(tmp_path / f"img{suffix}", source, fmt, **params)
    out = open_image(path)
    assert out.mode == "RGB" and out.size == (6, 4)
    assert out.getpixel((3, 2)) == (10, 200, 30)


def test_jpeg_opens_as_rgb(tmp_path):
    path = _write(tmp_path / "a.jpg", Image.new("RGB", (16, 16), (200, 40, 40)), "JPEG", quality=95)
    out = open_image(path)
    assert out.mode == "RGB"
    r, g, b = out.getpixel((8, 8))
    assert r > 180 and g < 70 and b < 70


def test_gif_uses_first_frame(tmp_path):
    red = Image.new("RGB", (8, 8), (255, 0, 0)).convert("P")
    blue = Image.new("RGB", (8, 8), (0, 0, 255)).convert("P")
    path = tmp_path / "anim.gif"
    red.save(path, "GIF", save_all=True, append_images=[blue], duration=100)
    out = open_image(path)
    assert out.mode == "RGB"
    assert out.getpixel((4, 4)) == (255, 0, 0)


def test_accepts_bytes_and_file_objects():
    data = _encode(Image.new("RGB", (3, 3), (1, 2, 3)), "PNG")
    assert open_image(data).getpixel((0, 0)) == (1, 2, 3)
    assert open_image(io.BytesIO(data)).getpixel((0, 0)) == (1, 2, 3)


def test_result_is_detached_from_the_file(tmp_path):
    path = _write(tmp_path / "a.png", Image.new("RGB", (3, 3), (9, 9, 9)), "PNG")
    out = open_image(path)
    path.unlink()  # pixels must already be in memory
    assert out.getpixel((1, 1)) == (9, 9, 9)


# ---- colour modes


def test_rgba_fully_transparent_red_becomes_white(tmp_path):
    image = Image.new("RGBA", (2, 1), (255, 0, 0, 0))
    image.putpixel((1, 0), (255, 0, 0, 255))
    out = open_image(_write(tmp_path / "a.png", image, "PNG"))
    assert out.getpixel((0, 0)) == (255, 255, 255)
    assert out.getpixel((1, 0)) == (255, 0, 0)
    assert out.info["source_mode"] == "RGBA"


def test_rgba_half_transparent_is_blended_with_white(tmp_path):
    image = Image.new("RGBA", (1, 1), (0, 0, 0, 128))
    out = open_image(_write(tmp_path / "a.png", image, "PNG"))
    assert all(120 <= c <= 135 for c in out.getpixel((0, 0)))


def test_la_transparent_black_becomes_white(tmp_path):
    image = Image.new("LA", (2, 1), (0, 0))
    image.putpixel((1, 0), (0, 255))
    out = open_image(_write(tmp_path / "a.png", image, "PNG"))
    assert out.getpixel((0, 0)) == (255, 255, 255)
    assert out.getpixel((1, 0)) == (0, 0, 0)


def test_palette_with_transparency_goes_through_rgba(tmp_path):
    image = Image.new("P", (2, 1), 0)
    image.putpalette([255, 0, 0, 0, 0, 255] + [0] * (256 * 3 - 6))
    image.putpixel((1, 0), 1)
    path = tmp_path / "p.png"
    image.save(path, "PNG", transparency=0)  # palette index 0 (red) is transparent
    out = open_image(path)
    assert out.getpixel((0, 0)) == (255, 255, 255)
    assert out.getpixel((1, 0)) == (0, 0, 255)


def test_grayscale_l_becomes_three_equal_channels(tmp_path):
    out = open_image(_write(tmp_path / "g.png", Image.new("L", (2, 2), 77), "PNG"))
    assert out.mode == "RGB" and out.getpixel((0, 0)) == (77, 77, 77)
    assert out.info["source_mode"] == "L"


def test_cmyk_converts_to_rgb(tmp_path):
    image = Image.new("CMYK", (4, 4), (0, 255, 255, 0))  # no cyan, full magenta+yellow = red
    out = open_image(_write(tmp_path / "c.tif", image, "TIFF"))
    assert out.mode == "RGB"
    assert out.getpixel((1, 1)) == (255, 0, 0)
    assert out.info["source_mode"] == "CMYK"


def test_16bit_png_is_rescaled_not_clamped(tmp_path):
    array = np.array([[65535, 32768, 0, 257]], dtype=np.uint16)
    path = _write(tmp_path / "deep.png", Image.fromarray(array), "PNG")
    assert Image.open(path).mode == "I;16"
    out = np.asarray(open_image(path))
    assert out[0, 0].tolist() == [255, 255, 255]
    assert out[0, 1, 0] in (127, 128)  # clamping would have made this 255
    assert out[0, 2, 0] == 0
    assert out[0, 3, 0] == 1


def test_16bit_big_endian_tiff_is_rescaled(tmp_path):
    image = Image.new("I;16B", (2, 1))
    image.putpixel((1, 0), 65535)
    out = np.asarray(open_image(_write(tmp_path / "be.tif", image, "TIFF")))
    assert out[0, :, 0].tolist() == [0, 255]


def test_32bit_int_holding_16bit_values_is_rescaled(tmp_path):
    image = Image.fromarray(np.array([[0, 65535, 32768]], dtype=np.int32))
    assert image.mode == "I"
    out = np.asarray(open_image(_write(tmp_path / "i.tif", image, "TIFF")))
    assert out[0, 0, 0] == 0 and out[0, 1, 0] == 255 and out[0, 2, 0] in (127, 128)


def test_float_image_in_unit_range_is_scaled(tmp_path):
    image = Image.fromarray(np.array([[0.0, 1.0, 0.5]], dtype=np.float32))
    assert image.mode == "F"
    out = np.asarray(open_image(_write(tmp_path / "f.tif", image, "TIFF")))
    assert out[0, 0, 0] == 0 and out[0, 1, 0] == 255 and out[0, 2, 0] in (127, 128)


def test_exif_orientation_is_applied(tmp_path):
    image = Image.new("RGB", (20, 10), (0, 128, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise when displayed
    path = _write(tmp_path / "phone.jpg", image, "JPEG", exif=exif.tobytes())
    assert Image.open(path).size == (20, 10)
    assert open_image(path).size == (10, 20)


# ---- errors


def test_zero_byte_file_is_rejected(tmp_path):
    path = tmp_path / "empty.png"
    path.write_bytes(b"")
    with pytest.raises(ImageError, match=r"empty\.png is empty \(0 bytes\)"):
        open_image(path)


def test_truncated_png_is_rejected(tmp_path):
    rng = np.random.default_rng(0)
    data = _encode(Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)), "PNG")
    path = tmp_path / "cut.png"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError, match=r"cut\.png is truncated or corrupt .*re-export"):
        open_image(path)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_truncated_jpeg_is_rejected(tmp_path):
    rng = np.random.default_rng(1)
    data = _encode(Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)), "JPEG")
    path = tmp_path / "cut.jpg"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError, match=r"cut\.jpg is truncated or corrupt"):
        open_image(path)


def test_text_file_with_image_name_is_rejected(tmp_path):
    path = tmp_path / "fake.png"
    path.write_text("definitely not pixels")
    with pytest.raises(ImageError, match=r"fake\.png is not a recognised image .*re-save"):
        open_image(path)


def test_missing_file_is_an_image_error(tmp_path):
    with pytest.raises(ImageError, match="does not exist"):
        open_image(tmp_path / "nope.png")


def test_pixel_limit_from_environment(tmp_path, monkeypatch):
    path = _write(tmp_path / "big.png", Image.new("RGB", (20, 20)), "PNG")
    monkeypatch.setenv(MAX_PIXELS_ENV, "100")
    assert max_pixels_limit() == 100
    with pytest.raises(ImageError, match=r"big\.png is 20x20 = 400 pixels, above the limit of 100"):
        open_image(path)
    monkeypatch.setenv(MAX_PIXELS_ENV, "400")
    assert open_image(path).size == (20, 20)


def test_pixel_limit_checked_before_decoding(tmp_path):
    # The pixel data is cut off: only a check on the header can reject it as too large instead
    # of as truncated.
    data = _encode(Image.new("RGB", (300, 300), (5, 5, 5)), "PNG")
    path = tmp_path / "bomb.png"
    path.write_bytes(data[:60])
    with pytest.raises(ImageError, match="above the limit of 1,000"):
        open_image(path, max_pixels=1000)


def test_explicit_limit_overrides_environment(tmp_path, monkeypatch):
    path = _write(tmp_path / "a.png", Image.new("RGB", (20, 20)), "PNG")
    monkeypatch.setenv(MAX_PIXELS_ENV, "10")
    assert open_image(path, max_pixels=400).size == (20, 20)


def test_invalid_environment_value_says_how_to_fix(monkeypatch):
    monkeypatch.setenv(MAX_PIXELS_ENV, "lots")
    with pytest.raises(ValueError, match="must be a positive whole number of pixels, got 'lots'"):
        max_pixels_limit()


def test_default_limit_matches_pillow():
    assert max_pixels_limit() == DEFAULT_MAX_PIXELS == 89_478_485


def test_pillow_bomb_warning_becomes_image_error(tmp_path, monkeypatch):
    path = _write(tmp_path / "w.png", Image.new("RGB", (20, 20)), "PNG")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 300)  # 400 px: warning territory
    with pytest.raises(ImageError, match="too large to decode safely"):
        open_image(path, max_pixels=300)


def test_pillow_bomb_error_becomes_image_error(tmp_path, monkeypatch):
    path = _write(tmp_path / "e.png", Image.new("RGB", (20, 20)), "PNG")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # 400 px > 2x limit: Pillow raises
    with pytest.raises(ImageError, match="too large to decode safely"):
        open_image(path, max_pixels=10_000)


# ---- names


def test_extension_set_and_case_insensitive_names():
    assert IMAGE_EXTENSIONS == {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".heic", ".heif",
                                ".avif"}
    assert is_image_name("A.JPG") and is_image_name("dir/b.Tiff") and is_image_name("c.webp")
    assert not is_image_name("notes.txt") and not is_image_name(".png") and not is_image_name("png")


# ---- reduced decoding (min_side): a phone photo shrunk to a 256-px square need not decode 12 megapixels


def _photo(width: int, height: int) -> Image.Image:
    """A smooth photo-like gradient with fine noise, so a reduced decode has detail to lose."""
    yy, xx = np.mgrid[0:height, 0:width]
    rng = np.random.default_rng(3)
    base = np.stack([xx * 255 // width, yy * 255 // height, (xx + yy) * 127 // (width + height)], -1)
    return Image.fromarray((base + rng.integers(0, 12, (height, width, 3))).clip(0, 255).astype(np.uint8))


def test_a_large_jpeg_decodes_reduced_to_twice_the_side_asked_and_squares_like_the_full_decode(tmp_path):
    from core.data.preprocess import Preprocessing, to_square

    path = _write(tmp_path / "photo.jpg", _photo(2400, 1800), "JPEG", quality=90)
    full, reduced = open_image(path), open_image(path, min_side=224)
    assert full.size == (2400, 1800)
    assert reduced.size == (600, 450)  # 1/4: 1/8 would leave 225 px, under twice 224
    assert reduced.info["source_size"] == full.info["source_size"] == (2400, 1800)
    pre = Preprocessing(resize_size=224, crop_size=224, mean=(0.5,) * 3, std=(0.5,) * 3)
    a, b = to_square(full, pre).astype(float), to_square(reduced, pre).astype(float)
    assert np.abs(a - b).mean() < 1.0  # grey levels of 255


def test_reduced_decoding_keeps_small_jpegs_and_other_formats_whole_and_still_rejects_truncation(tmp_path):
    small = _write(tmp_path / "small.jpg", _photo(400, 300), "JPEG")
    assert open_image(small, min_side=224).size == (400, 300)  # half would be under 2 x 224
    png = _write(tmp_path / "big.png", _photo(1600, 1200), "PNG")
    assert open_image(png, min_side=64).size == (1600, 1200)  # PNG has no reduced decode
    data = _encode(_photo(1600, 1200), "JPEG")
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(ImageError, match=r"cut\.jpg is truncated or corrupt"):
        open_image(tmp_path / "cut.jpg", min_side=32)


def test_source_size_is_the_displayed_size_of_an_exif_rotated_reduced_jpeg(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise when displayed
    path = _write(tmp_path / "phone.jpg", _photo(1600, 800), "JPEG", exif=exif.tobytes())
    image = open_image(path, min_side=32)
    assert image.size == (100, 200)  # 1/8, turned
    assert image.info["source_size"] == (800, 1600)


# ---- phone formats: HEIC (pillow-heif, in requirements.txt) and AVIF (Pillow)


@pytest.mark.parametrize("fmt, suffix", [("HEIF", ".heic"), ("AVIF", ".avif")])
def test_heic_and_avif_photos_open_as_rgb_and_are_found_in_a_dataset_folder(tmp_path, fmt, suffix):
    from core.data import datasets

    for label, colour in (("red", (200, 30, 40)), ("blue", (30, 40, 200))):
        (tmp_path / label).mkdir()
        for i in range(3):
            _write(tmp_path / label / f"IMG_{i}{suffix.upper()}", Image.new("RGB", (96, 64), colour), fmt, quality=90)
    image = open_image(tmp_path / "red" / f"IMG_0{suffix.upper()}")
    assert image.mode == "RGB" and image.size == (96, 64)
    assert np.abs(np.asarray(image, dtype=int)[32, 48] - (200, 30, 40)).max() <= 6  # lossy, close
    index = datasets.load_index(str(tmp_path))
    assert len(index.items) == 6 and sorted(index.classes) == ["blue", "red"]
