"""bench/planning.py's comparison of the plan's choice with every candidate it timed,
on a tiny synthetic folder store: a row per candidate, the plan's choice marked."""

from __future__ import annotations

import argparse
import json
import math

import pytest

from bench import planning
from medpipe.data import store


@pytest.fixture(scope="module")
def colour_store(tmp_path_factory):
    root = tmp_path_factory.mktemp("grid")
    return root, planning.make_store(root, "phantom:16:40,20:rgb", None)


def test_a_phantom_spec_gives_its_counts_and_colour(colour_store) -> None:
    _, prepared = colour_store
    stats = store.read_stats(prepared)
    assert stats["channels"] == 3 and stats["image_size"] == 16
    assert stats["classes"] == ["normal", "opacity"]
    labels = [store.load_split(prepared, s).labels for s in ("train", "val", "test")]
    assert sum(int((lab == 1).sum()) for lab in labels) == 20
    assert sum(len(lab) for lab in labels) == 60


def test_every_timed_candidate_is_trained_and_the_plan_is_marked(colour_store,
                                                                  capsys) -> None:
    root, prepared = colour_store
    args = argparse.Namespace(budget=0.05, steps=1, device="cpu", data=None)
    rows = planning.compare(root, prepared, 0, args)
    assert sum(r["planned"] for r in rows) == 1
    assert {r["candidate"] for r in rows} >= {"cnn at 16 px"}
    assert all(r["epochs"] >= 1 and math.isfinite(r["auc"]) for r in rows)
    json.dumps(rows)  # printable as the benchmark prints them
    planning.compare_summary("phantom", rows)
    assert "planned" in capsys.readouterr().out.splitlines()[-1]
