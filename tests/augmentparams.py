"""Augment params for tests: the committed section with every transform off, then changes."""

from __future__ import annotations

from pathlib import Path

import yaml

from medpipe.params.loading import parse_section
from medpipe.params.sections import AugmentParams

PARAMS = Path(__file__).resolve().parents[1] / "params.yaml"
OFF = dict(affine_p=0.0, hflip_p=0.0, vflip_p=0.0, intensity_p=0.0, noise_p=0.0)


def augment_cfg(**changes) -> AugmentParams:
    """The committed augment section with every transform off, then ``changes``."""
    values = yaml.safe_load(PARAMS.read_text(encoding="utf-8"))["augment"]
    values.update(OFF)
    values.update(changes)
    return parse_section("augment", values, stage="train")
