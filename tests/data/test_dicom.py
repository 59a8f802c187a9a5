"""DICOM decoding on small files built here with pydicom: malformed attributes refused in
one line, the display pipeline's less common paths (Presentation LUT INVERSE, palette
colour, Bits Stored below Bits Allocated, 32-bit data), frame choice, DICOM recognised by
content, and pydicom's warnings gathered once per cause."""

from __future__ import annotations

import io
import logging
import warnings
import zipfile

import numpy as np
import pytest
from imagefiles import data_cfg, prepare_cfg

from medpipe import PipelineError
from medpipe.data import prepare
from medpipe.data.convert import convert_files
from medpipe.data.dicom import DicomWarning, check_frame, is_dicom_file, one_line
from medpipe.data.imageio import ImageError, decode, is_image_file
from medpipe.data.sources.registry import read
from stages.download import download


def dicom(arr: np.ndarray, *, frames: int = 1, header: bool = True, bits_stored=None,
          **attrs) -> bytes:
    """An explicit VR little endian DICOM file of ``arr``: (rows, cols) grey, (rows, cols,
    3) RGB, with a leading frame axis when ``frames`` > 1; ``header``: the 128-byte
    preamble, ``DICM`` and the file meta information."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    ds = Dataset()
    ds.SOPClassUID, ds.SOPInstanceUID = SecondaryCaptureImageStorage, generate_uid()
    shape = arr.shape[1:] if frames > 1 else arr.shape
    ds.Rows, ds.Columns = shape[:2]
    colour = len(shape) == 3
    ds.SamplesPerPixel = 3 if colour else 1
    ds.PhotometricInterpretation = "RGB" if colour else "MONOCHROME2"
    if colour:
        ds.PlanarConfiguration = 0
    if frames > 1:
        ds.NumberOfFrames = frames
    bits = 8 * arr.dtype.itemsize
    ds.BitsAllocated, ds.BitsStored = bits, bits_stored or bits
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 1 if arr.dtype.kind == "i" else 0
    ds.PixelData = arr.astype(arr.dtype.newbyteorder("<")).tobytes()
    for key, value in attrs.items():
        setattr(ds, key, value)
    buf = io.BytesIO()
    if header:
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.save_as(buf, enforce_file_format=True)
    else:  # a bare dataset, as older files are
        ds.save_as(buf, implicit_vr=False, little_endian=True)
    return buf.getvalue()


GREY = np.arange(48, dtype=np.uint16).reshape(6, 8) * 20  # 0..940


def to_8_bits(arr: np.ndarray) -> np.ndarray:
    return np.round(arr / 65535.0 * 255.0).astype(np.uint8)


# ----------------------------------------------------- malformed files: one line, named


def test_empty_window_center_is_ignored_and_noted() -> None:
    notes: list[str] = []
    got = decode(dicom(GREY, WindowCenter=None, WindowWidth=400), "a/x.dcm", notes=notes)
    assert np.array_equal(got, decode(dicom(GREY), "y.dcm"))  # the image's own range
    assert len(notes) == 1 and "Window Center/Width" in notes[0]


def test_empty_voi_lut_sequence_falls_back_to_the_window() -> None:
    notes: list[str] = []
    got = decode(dicom(GREY, VOILUTSequence=[], WindowCenter=400, WindowWidth=200), "x.dcm",
                 notes=notes)
    assert np.array_equal(got, decode(dicom(GREY, WindowCenter=400, WindowWidth=200), "y.dcm"))
    assert notes == ["empty VOI LUT Sequence: ignored"]


def with_frames_value(value: bytes) -> bytes:
    """A file whose Number of Frames (IS, 2 bytes) reads ``value``: pydicom refuses to
    write a malformed one itself."""
    data = dicom(np.zeros((2, 4, 4), dtype=np.uint16), frames=11)
    written = b"\x28\x00\x08\x00IS\x02\x0011"
    assert data.count(written) == 1
    return data.replace(written, written[:-2] + value)


def test_bad_number_of_frames_is_an_image_error_naming_the_file() -> None:
    with pytest.raises(ImageError) as info:
        decode(with_frames_value(b"1A"), "scans/bad.dcm")
    message = str(info.value)
    assert message.startswith("scans/bad.dcm: DICOM Number of Frames '1A' is not a whole number")
    assert "\n" not in message and not info.value.fatal
    with pytest.raises(ImageError, match=r"^x.dcm: DICOM Number of Frames is 0"):
        decode(with_frames_value(b"0 "), "x.dcm")


def test_whatever_a_malformed_file_raises_becomes_an_image_error() -> None:
    # An empty Rescale Slope makes pydicom multiply by None (a TypeError).
    data = dicom(GREY, RescaleSlope=None, RescaleIntercept=0)
    with pytest.raises(ImageError, match=r"^x.dcm: not a readable DICOM file \(") as info:
        decode(data, "x.dcm")
    assert "\n" not in str(info.value) and not info.value.fatal


def test_skip_records_a_malformed_dicom_and_keeps_the_rest(tmp_path) -> None:
    ok = dicom(GREY, WindowCenter=400, WindowWidth=400)
    for cls in ("a", "b"):
        (tmp_path / "d" / cls).mkdir(parents=True)
        for i in range(4):
            (tmp_path / "d" / cls / f"{i}.dcm").write_bytes(ok)
    (tmp_path / "d" / "a" / "9.dcm").write_bytes(with_frames_value(b"1A"))
    download(data_cfg(path=str(tmp_path / "d")), tmp_path / "raw")
    stats = prepare.prepare(read(tmp_path / "raw"), tmp_path / "store",
                            prepare_cfg(on_error="skip"))
    assert sum(stats["images"].values()) == 8
    [skipped] = stats["skipped"]["files"]
    assert skipped["file"] == "a/9.dcm" and "Number of Frames '1A'" in skipped["error"]


# ------------------------------------------------------------ the display pipeline


def test_presentation_lut_inverse_inverts_once() -> None:
    plain = decode(dicom(GREY), "x.dcm")
    assert np.array_equal(decode(dicom(GREY, PresentationLUTShape="INVERSE"), "x.dcm"),
                          65535 - plain)
    # MONOCHROME1 comes with INVERSE (PS3.3 C.8.11.7): the same single inversion.
    both = dicom(GREY, PhotometricInterpretation="MONOCHROME1", PresentationLUTShape="INVERSE")
    assert np.array_equal(decode(both, "x.dcm"), 65535 - plain)


def test_rgb_in_12_of_16_bits_spans_the_full_range() -> None:
    rgb = np.zeros((4, 4, 3), dtype=np.uint16)
    rgb[0, 0], rgb[1, 1] = (4095, 0, 2048), (1024, 4095, 0)
    got = decode(dicom(rgb, bits_stored=12), "x.dcm")
    assert got.dtype == np.uint16 and got.shape == (4, 4, 3)
    assert to_8_bits(got)[0, 0].tolist() == [255, 0, 128]
    assert to_8_bits(got)[1, 1].tolist() == [64, 255, 0]


def test_32_bit_rgb_and_grey_are_scaled_not_wrapped() -> None:
    rgb = np.zeros((2, 2, 3), dtype=np.uint32)
    rgb[0, 0], rgb[1, 1] = (2**32 - 1, 2**31, 65536), (0, 2**16 - 1, 2**24)
    got = to_8_bits(decode(dicom(rgb), "x.dcm"))
    assert got[0, 0].tolist() == [255, 128, 0] and got[1, 1].tolist() == [0, 0, 1]
    grey = np.array([[0, 2**20], [2**30, 2**32 - 1]], dtype=np.uint32)
    assert to_8_bits(decode(dicom(grey), "y.dcm")).tolist() == [[0, 0], [64, 255]]


def palette_file(bits: int) -> bytes:
    indices = np.array([[0, 1], [2, 3]], dtype=np.uint8)
    top = 2**bits - 1
    red, green, blue = ([0, top, 0, top // 2], [0, 0, top, top // 2], [0, 0, 0, top])
    dtype = np.uint8 if bits == 8 else np.uint16
    luts = {f"{c}PaletteColorLookupTableData": np.array(v, dtype=dtype).tobytes()
            for c, v in zip(("Red", "Green", "Blue"), (red, green, blue), strict=True)}
    descriptors = {f"{c}PaletteColorLookupTableDescriptor": [4, 0, bits]
                   for c in ("Red", "Green", "Blue")}
    return dicom(indices, PhotometricInterpretation="PALETTE COLOR", **luts, **descriptors)


@pytest.mark.parametrize("bits", [8, 16])
def test_palette_colour_goes_through_its_lut(bits) -> None:
    got = decode(palette_file(bits), "x.dcm")
    assert got.dtype == (np.uint8 if bits == 8 else np.uint16) and got.shape == (2, 2, 3)
    eight = got if bits == 8 else to_8_bits(got)
    assert eight.reshape(4, 3).tolist() == [[0, 0, 0], [255, 0, 0], [0, 255, 0],
                                            [127, 127, 255]]


# ------------------------------------------------------- transfer syntaxes, decoders


def with_syntax(syntax) -> bytes:
    from pydicom import dcmread
    from pydicom.encaps import encapsulate

    ds = dcmread(io.BytesIO(dicom(GREY.astype(np.uint8))))
    ds.file_meta.TransferSyntaxUID = syntax
    ds.PixelData = encapsulate([b"\xff\xd8" + b"\x00" * 8])
    ds["PixelData"].VR = "OB"
    buf = io.BytesIO()
    ds.save_as(buf)
    return buf.getvalue()


def test_a_syntax_pydicom_cannot_decode_is_named() -> None:
    from pydicom.uid import MPEG2MPML

    with pytest.raises(ImageError, match=r"^v.dcm: DICOM transfer syntax MPEG2 Main Profile "
                                         r"/ Main Level \(1.2.840.10008.1.2.4.100\) has no "
                                         r"pixel-data decoder in pydicom$"):
        decode(with_syntax(MPEG2MPML), "v.dcm")


def test_without_a_plugin_the_refusal_says_what_to_install(monkeypatch) -> None:
    import pydicom.pixels
    from pydicom.uid import JPEGLSLossless

    class Missing:  # a decoder whose plugins are all absent
        is_available = False
        missing_dependencies = ["pyjpegls - requires pyjpegls>=1.2"]

    monkeypatch.setattr(pydicom.pixels, "get_decoder", lambda uid: Missing())
    with pytest.raises(ImageError, match=r"^ls.dcm: no decoder installed for DICOM JPEG-LS "
                                         r"Lossless Image Compression; install one of: "
                                         r"pyjpegls - requires pyjpegls>=1.2$"):
        decode(with_syntax(JPEGLSLossless), "ls.dcm")


# ------------------------------------------------------------------- frame choice


FRAMES = np.stack([np.full((4, 4), 10 * k, dtype=np.uint16) for k in range(5)])
FRAMES[:, 0, 0] = 1000  # each frame has a range of its own: 0..1000


def frame_value(data: bytes, frame) -> int:
    """The decoded (0..1000 windowed) value of a frame's flat region."""
    return int(to_8_bits(decode(data, "x.dcm", frame=frame))[1, 1])


def test_frame_choice_middle_first_and_numbered() -> None:
    data = dicom(FRAMES, frames=5, WindowCenter=500, WindowWidth=1001)
    assert [frame_value(data, f) for f in ("first", 1, 2, "middle", 5)] == [
        round(10 * k / 1000 * 255) for k in (0, 0, 1, 2, 4)]


def test_frame_refusal_and_out_of_range_name_the_file() -> None:
    data = dicom(FRAMES, frames=5)
    with pytest.raises(ImageError, match=r"^m.dcm: multi-frame DICOM \(5 frames\) refused"):
        decode(data, "m.dcm", frame="refuse")
    with pytest.raises(ImageError, match=r"^m.dcm: DICOM frame 6 asked for, but the file "
                                         r"has 5 frames"):
        decode(data, "m.dcm", frame=6)
    single = dicom(GREY)
    assert decode(single, "s.dcm", frame="refuse").shape == GREY.shape
    assert decode(single, "s.dcm", frame=1).shape == GREY.shape
    for wrong in ("last", 0, True, "2"):
        with pytest.raises(ValueError, match="DICOM frame must be one of"):
            check_frame(wrong)


def test_a_large_multi_frame_file_is_not_a_bomb() -> None:
    # 4,000 frames of 200 x 200 announce 160 M pixels; one frame (40,000) is decoded.
    data = dicom(np.zeros((2, 200, 200), dtype=np.uint8), frames=2)
    data = data.replace(b"\x28\x00\x08\x00IS\x02\x002 ", b"\x28\x00\x08\x00IS\x04\x004000",
                        1)
    with pytest.raises(ImageError) as info:  # the data holds 2 frames, not 4,000
        decode(data, "big.dcm", frame="first")
    assert not info.value.fatal and "cannot decode the DICOM pixel data" in str(info.value)


# ------------------------------------------------------------- DICOM by content


def test_dicom_without_extension_is_recognised_by_content(tmp_path) -> None:
    data = dicom(GREY)
    assert np.array_equal(decode(data, "scans/IM0001"), decode(data, "x.dcm"))
    (tmp_path / "IM0001").write_bytes(data)
    (tmp_path / "1.2.840.1").write_bytes(data)  # an unknown "extension"
    (tmp_path / "notes").write_text("x" * 200)
    assert is_dicom_file(tmp_path / "IM0001") and is_image_file(tmp_path / "1.2.840.1")
    assert not is_image_file(tmp_path / "notes") and not is_dicom_file(tmp_path / "nothing")


def test_headerless_dcm_is_read_but_not_without_extension() -> None:
    bare = dicom(GREY, header=False)
    assert bare[128:132] != b"DICM"
    assert np.array_equal(decode(bare, "old.dcm"), decode(dicom(GREY), "x.dcm"))
    with pytest.raises(ImageError, match=r"^IM0002: unsupported file without an extension, "
                                         r"and not DICOM \(no 'DICM' at byte 128\)"):
        decode(bare, "IM0002")
    with pytest.raises(ImageError, match=r"^x.dcm: not a DICOM file \(no DICM header\)$"):
        decode(b"\x00" * 200, "x.dcm")


def test_folder_source_takes_dicom_files_without_extension(tmp_path) -> None:
    for cls in ("a", "b"):
        (tmp_path / "d" / cls).mkdir(parents=True)
        for i in range(4):
            (tmp_path / "d" / cls / f"IM{i:04d}").write_bytes(dicom(GREY + i))
    download(data_cfg(path=str(tmp_path / "d")), tmp_path / "raw")
    data = read(tmp_path / "raw")
    assert data.ids[0] == "a/IM0000" and data.images.decode(0).shape == GREY.shape
    (tmp_path / "d" / "a" / "README").write_text("not an image")
    with pytest.raises(PipelineError, match=r"README: unsupported file without an extension, "
                                            r"and not DICOM"):
        download(data_cfg(path=str(tmp_path / "d")), tmp_path / "raw2")


# ------------------------------------------------------- warnings: once per cause


def padded() -> bytes:
    """A file whose pixel data has 2 bytes more than the image: pydicom warns, and logs."""
    from pydicom import dcmread

    ds = dcmread(io.BytesIO(dicom(GREY)))
    ds.PixelData = ds.PixelData + b"\x00\x00"
    buf = io.BytesIO()
    ds.save_as(buf)
    return buf.getvalue()


def test_pydicom_warnings_are_notes_not_printed_twice(caplog) -> None:
    notes: list[str] = []
    with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.WARNING):
        warnings.simplefilter("always")
        decode(padded(), "x.dcm", notes=notes)
    assert len(notes) == 1 and "excess padding" in notes[0]
    assert caught == [] and caplog.records == []
    with pytest.warns(DicomWarning, match="excess padding") as caught:
        decode(padded(), "x.dcm")
    assert len(caught) == 1


def test_convert_logs_one_line_per_cause_and_skips_with_the_full_reason(tmp_path,
                                                                         caplog) -> None:
    pack = tmp_path / "images.zip"
    with zipfile.ZipFile(pack, "w") as zf:
        zf.writestr("a.dcm", padded())
        zf.writestr("b.dcm", padded())
        zf.writestr("c.dcm", with_frames_value(b"1A"))
    with caplog.at_level(logging.WARNING, logger="medpipe.data.convert"):
        done = convert_files(pack, ["a.dcm", "b.dcm", "c.dcm"], {"train": np.arange(3)},
                             tmp_path, channels=1, size=4, on_error="skip", workers=1)
    [(cause, files)] = done.warnings.items()
    assert "excess padding" in cause and files == ["a.dcm", "b.dcm"]
    lines = [r.getMessage() for r in caplog.records if "excess padding" in r.getMessage()]
    assert len(lines) == 1 and lines[0].startswith("2 image file(s) decoded despite: ")
    [skipped] = done.skipped
    assert skipped["file"] == "c.dcm" and "pydicom warned: Invalid value for VR IS" in (
        skipped["error"])


def test_one_line_keeps_every_line_of_a_plugin_report() -> None:
    report = ("Unable to decode as exceptions were raised by all available plugins:\n"
              "  gdcm: GDCM does not support 12-bit\n  pillow: nor Pillow\n")
    assert one_line(report) == ("Unable to decode as exceptions were raised by all available "
                                "plugins: gdcm: GDCM does not support 12-bit; pillow: nor Pillow")
    assert one_line("End of file found in file <no filename>") == "End of file"
