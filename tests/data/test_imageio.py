"""Decoding image files: Pillow formats and bit depths, DICOM display pipeline, and the
refusals (corrupt, truncated, unsupported, decompression bomb), each naming the file."""

from __future__ import annotations

import numpy as np
import pytest
from imagefiles import dicom_bytes, pixels, png_header_only, save
from PIL import Image

from medpipe.data.imageio import MAX_PIXELS, ImageError, decode, read_image, window


@pytest.mark.parametrize("suffix", [".png", ".bmp", ".tif", ".tiff"])
def test_lossless_grey_8_bit_round_trips(tmp_path, suffix) -> None:
    arr = pixels(1)
    got = read_image(save(tmp_path / f"x{suffix}", arr))
    assert got.dtype == np.uint8 and np.array_equal(got, arr)


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_grey_16_bit_keeps_its_depth(tmp_path, suffix) -> None:
    arr = pixels(2, dtype=np.uint16)
    got = read_image(save(tmp_path / f"x{suffix}", arr))
    assert got.dtype == np.uint16 and np.array_equal(got, arr)


@pytest.mark.parametrize("suffix", [".png", ".bmp", ".tif"])
def test_rgb_round_trips(tmp_path, suffix) -> None:
    arr = pixels(3, (9, 7, 3))
    got = read_image(save(tmp_path / f"x{suffix}", arr))
    assert got.shape == (9, 7, 3) and np.array_equal(got, arr)


def test_jpeg_is_decoded_close_to_the_original(tmp_path) -> None:
    arr = np.tile(np.linspace(0, 255, 32, dtype=np.uint8), (32, 1))
    Image.fromarray(arr).save(tmp_path / "x.jpg", quality=95)
    got = read_image(tmp_path / "x.jpg")
    assert got.shape == (32, 32) and np.abs(got.astype(int) - arr).max() <= 8


def test_truncated_png_names_the_file(tmp_path) -> None:
    data = (save(tmp_path / "x.png", pixels(4, (64, 64)))).read_bytes()
    with pytest.raises(ImageError) as info:
        decode(data[: len(data) // 2], "scans/x.png")
    assert str(info.value).startswith("scans/x.png: not a readable image")
    assert not info.value.fatal


def test_garbage_is_not_an_image() -> None:
    with pytest.raises(ImageError, match=r"^a/b.jpg: not a readable image"):
        decode(b"this is not a jpeg", "a/b.jpg")


def test_unsupported_type_says_which() -> None:
    with pytest.raises(ImageError, match=r"^a/notes.txt: unsupported file type '.txt'; "
                                         r"supported: .png, .jpg"):
        decode(b"hello", "a/notes.txt")
    with pytest.raises(ImageError, match="file without an extension"):
        decode(b"hello", "a/IM0001")


def test_decompression_bomb_png_is_refused_before_decoding() -> None:
    side = int(MAX_PIXELS**0.5) + 1
    with pytest.raises(ImageError) as info:
        decode(png_header_only(side, side), "big.png")
    assert "big.png" in str(info.value) and "decompression bomb" in str(info.value)
    assert info.value.fatal
    # Above twice the limit Pillow itself raises; still one line, still fatal.
    with pytest.raises(ImageError) as info:
        decode(png_header_only(30000, 30000), "huge.png")
    assert str(info.value).startswith("huge.png: ") and info.value.fatal


# -------------------------------------------------------------------------------- DICOM


def expected_window(x: np.ndarray, c: float, w: float) -> np.ndarray:
    y = np.clip((x - (c - 0.5)) / (w - 1) + 0.5, 0.0, 1.0)
    return np.round(y * 65535).astype(np.uint16)


def test_dicom_rescale_then_window() -> None:
    stored = np.arange(0, 4000, 40, dtype=np.uint16).reshape(10, 10)
    data = dicom_bytes(stored, RescaleSlope=2, RescaleIntercept=-1024, WindowCenter=40,
                       WindowWidth=400)
    got = decode(data, "ct.dcm")
    hu = stored.astype(np.float64) * 2 - 1024
    assert got.dtype == np.uint16 and np.array_equal(got, expected_window(hu, 40, 400))
    assert got.min() == 0 and got.max() == 65535  # the window clips both ends here


def test_dicom_monochrome1_is_inverted() -> None:
    stored = np.arange(100, dtype=np.uint16).reshape(10, 10) * 10
    normal = decode(dicom_bytes(stored, WindowCenter=500, WindowWidth=800), "a.dcm")
    inverted = decode(dicom_bytes(stored, WindowCenter=500, WindowWidth=800,
                                  PhotometricInterpretation="MONOCHROME1"), "b.dcm")
    assert np.array_equal(inverted, 65535 - normal)


def test_dicom_without_window_uses_its_own_range() -> None:
    stored = np.array([[10, 20], [30, 50]], dtype=np.uint16)
    got = decode(dicom_bytes(stored), "x.dcm")
    assert got.tolist() == [[0, 16384], [32768, 65535]]


def test_dicom_first_of_several_windows_and_signed_pixels() -> None:
    stored = np.array([[-1000, 0], [40, 1000]], dtype=np.int16)
    got = decode(dicom_bytes(stored, WindowCenter=[40, 500], WindowWidth=[400, 2000]),
                 "x.dcm")
    assert np.array_equal(got, expected_window(stored.astype(float), 40, 400))


def test_dicom_voi_lut_function_variants() -> None:
    x = np.array([0.0, 50.0, 100.0])
    assert window(x, 50, 100, "LINEAR_EXACT").tolist() == [0.0, 0.5, 1.0]
    assert window(x, 50, 100, "SIGMOID")[1] == pytest.approx(0.5)
    with pytest.raises(ImageError, match="unsupported VOI LUT Function"):
        window(x, 50, 100, "CUBIC", "x.dcm")


def test_dicom_bomb_is_refused_from_the_header() -> None:
    data = dicom_bytes(np.zeros((2, 2), dtype=np.uint16), Rows=20000, Columns=20000)
    with pytest.raises(ImageError) as info:
        decode(data, "bomb.dcm")
    assert str(info.value).startswith("bomb.dcm: DICOM frame Rows x Columns 20000 x 20000")
    assert info.value.fatal


def test_not_dicom_and_truncated_dicom_name_the_file() -> None:
    with pytest.raises(ImageError, match=r"^x.dcm: not a DICOM file"):
        decode(b"\x00" * 200, "x.dcm")
    data = dicom_bytes(np.zeros((64, 64), dtype=np.uint16))
    with pytest.raises(ImageError, match=r"^y.dcm: ") as info:
        decode(data[: len(data) - 4000], "y.dcm")
    assert not info.value.fatal
