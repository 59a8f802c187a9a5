"""Every file with pixel data among pydicom's test files and pydicom-data (installed, never
downloaded) is decoded as pydicom's own display pipeline would show it, within 1 of 255 in
8 bits, or refused in one line naming the file; the refusals are the known ones. The
comparison lives in bench/dicom_corpus.py, which prints the table docs/dicom.md quotes."""

from __future__ import annotations

import pytest

from bench import dicom_corpus

# The files refused, and why: a new refusal (or a file that starts decoding) fails here.
REFUSED = {
    "pydicom/JPEG-lossy.dcm": "no installed decoder",  # 12-bit JPEG: GPL plugin only
    "pydicom/JPGExtended.dcm": "no installed decoder",
    "pydicom/JPEG2000-embedded-sequence-delimiter.dcm": "damaged",
    "pydicom/MR_truncated.dcm": "damaged",
    "pydicom-data/emri_small_jpeg_2k_lossless_too_short.dcm": "damaged",
    "pydicom/badVR.dcm": "malformed",
    "pydicom/meta_missing_tsyntax.dcm": "attributes missing",
    "pydicom/nested_priv_SQ.dcm": "attributes missing",
    "pydicom/no_meta.dcm": "not a DICOM image",
}


@pytest.fixture(scope="module")
def rows() -> list[dicom_corpus.Row]:
    return dicom_corpus.run()


def test_the_corpus_is_all_there(rows) -> None:
    assert len(rows) == 164
    assert sum(r.file.startswith("pydicom-data/") for r in rows) == 68


def test_every_decoded_file_matches_pydicom_within_one_level(rows) -> None:
    differing = [f"{r.file}: {r.detail}" for r in rows if r.outcome == "differs"]
    assert differing == []
    assert sum(r.outcome == "decoded" for r in rows) == len(rows) - len(REFUSED)


def test_refusals_are_the_known_ones_each_one_line_naming_the_file(rows) -> None:
    refused = {r.file: r for r in rows if r.outcome == "refused"}
    assert sorted(refused) == sorted(REFUSED)
    for name, row in refused.items():
        assert row.detail.startswith(f"{name}: ") and "\n" not in row.detail
        assert REFUSED[name] in row.cause, (name, row.cause, row.detail)
    assert "pylibjpeg-libjpeg" in refused["pydicom/JPGExtended.dcm"].detail  # what to install


def test_multi_frame_and_palette_files_are_decoded(rows) -> None:
    decoded = {r.file for r in rows if r.outcome == "decoded"}
    assert {"pydicom-data/emri_small_jpeg_ls_lossless.dcm", "pydicom/rtdose.dcm",
            "pydicom-data/color3d_jpeg_baseline.dcm", "pydicom-data/OBXXXX1A_rle_2frame.dcm",
            "pydicom-data/gdcm-US-ALOKA-16.dcm", "pydicom-data/OT-PAL-8-face.dcm",
            "pydicom-data/SC_rgb_32bit_2frame.dcm", "pydicom/image_dfl.dcm",
            "pydicom/dicomdirtests/77654033/CR1/6154"} <= decoded
