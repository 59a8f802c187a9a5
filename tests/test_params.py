"""Strict params: unknown/missing keys, types, sections, and the stage shells' one-line errors."""

from __future__ import annotations

import copy
import dataclasses
import importlib
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from medpipe import PipelineError
from medpipe.params.loading import load_section, parse_section
from medpipe.params.sections import (
    DVC_RESERVED_KEYS,
    SECTIONS,
    DataParams,
    EvaluateParams,
    PrepareParams,
    TrainParams,
)
from medpipe.utils import cli

REPO = Path(__file__).resolve().parents[1]

def _valid() -> dict[str, dict[str, Any]]:
    """The committed params.yaml, shrunk: every key present, as the stages require."""
    doc = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))
    doc["data"].update(resolution=64, n_per_class=10)
    doc["prepare"].update(image_size=32)
    doc["train"].update(epochs=2, device="cpu", schedule="constant", warmup_epochs=0)
    doc["evaluate"].update(device="cpu")
    return doc


VALID: dict[str, dict[str, Any]] = _valid()


def doc_with(section: str, **changes: Any) -> dict[str, Any]:
    """A full valid params document with ``section`` updated by ``changes``."""
    doc = copy.deepcopy(VALID)
    doc[section].update(changes)
    return doc


def write_params(path: Path, doc: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return path


def error_of(section: str, values: Any, stage: str = "train") -> str:
    """The message of the PipelineError that ``parse_section`` raises; it must be one line."""
    with pytest.raises(PipelineError) as info:
        parse_section(section, values, stage=stage, where="p.yaml")
    message = str(info.value)
    assert "\n" not in message, f"error message is not one line: {message!r}"
    return message


# ---------------------------------------------------------------------------- parse_section


def test_valid_sections_parse_to_typed_dataclasses() -> None:
    data = parse_section("data", VALID["data"], stage="download")
    prepare = parse_section("prepare", VALID["prepare"], stage="prepare")
    train = parse_section("train", VALID["train"], stage="train")
    evaluate = parse_section("evaluate", VALID["evaluate"], stage="evaluate")
    assert isinstance(data, DataParams) and data.classes is None  # each source its own
    assert isinstance(prepare, PrepareParams) and prepare.channels == "auto"
    assert isinstance(train, TrainParams) and train.model == "cnn"
    assert train.lr == VALID["train"]["lr"] and train.schedule == "constant"
    assert isinstance(evaluate, EvaluateParams) and evaluate.split == "test"


def test_repository_params_yaml_is_valid() -> None:
    """The committed params.yaml parses for every stage."""
    for section, stage in [("data", "download"), ("prepare", "prepare"),
                           ("train", "train"), ("evaluate", "evaluate")]:
        cfg = load_section(REPO / "params.yaml", section, stage)
        assert type(cfg).__name__.lower().startswith(section)


def test_unknown_key_names_key_stage_and_suggestion() -> None:
    values = dict(VALID["train"])
    values["modle"] = values.pop("model")
    message = error_of("train", values)
    assert "'train.modle'" in message
    assert "stage train" in message
    assert "did you mean 'model'" in message
    assert message.startswith("p.yaml:")


def test_unknown_key_without_close_match_has_no_suggestion() -> None:
    message = error_of("train", {**VALID["train"], "zzzzqqq": 1})
    assert "'train.zzzzqqq'" in message
    assert "did you mean" not in message


def test_missing_key_is_named() -> None:
    values = dict(VALID["train"])
    del values["momentum"]
    message = error_of("train", values)
    assert "missing key 'train.momentum'" in message
    assert "stage train" in message


def test_wrong_type_names_key_expected_type_and_value() -> None:
    message = error_of("train", {**VALID["train"], "lr": "fast"})
    assert "'train.lr'" in message
    assert "a number" in message
    assert "'fast'" in message
    assert "stage train" in message


def test_section_that_is_not_a_mapping_is_refused() -> None:
    message = error_of("train", ["model", "cnn"])
    assert "'train' must be a mapping" in message


@pytest.mark.parametrize("key", ["lr", "dropout", "width_mult"])
def test_yaml_true_is_not_a_number(key: str) -> None:
    message = error_of("train", {**VALID["train"], key: True})
    assert f"'train.{key}'" in message and "True" in message


def test_yaml_true_is_not_an_integer() -> None:
    message = error_of("train", {**VALID["train"], "epochs": True})
    assert "'train.epochs' must be an integer" in message


def test_yaml_true_is_not_a_channel_count() -> None:
    """``True == 1`` in Python, but ``channels: true`` must not pass as Literal 1."""
    message = error_of("prepare", {**VALID["prepare"], "channels": True}, stage="prepare")
    assert "'prepare.channels'" in message
    assert "one of 'auto', 1, 3" in message


def test_yaml_parses_true_as_bool_end_to_end(tmp_path: Path) -> None:
    """Through the YAML loader: ``lr: yes``/``true`` are booleans and refused."""
    text = yaml.safe_dump(VALID, sort_keys=False)
    assert f"\n  lr: {VALID['train']['lr']}\n" in text
    text = text.replace(f"\n  lr: {VALID['train']['lr']}\n", "\n  lr: true\n")
    path = tmp_path / "params.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(PipelineError, match=r"'train\.lr' must be a number, got True"):
        load_section(path, "train", "train")


def test_int_is_accepted_for_float_fields_and_converted() -> None:
    cfg = parse_section("train", {**VALID["train"], "lr": 1, "dropout": 0}, stage="train")
    assert cfg.lr == 1.0 and type(cfg.lr) is float
    assert cfg.dropout == 0.0 and type(cfg.dropout) is float


def test_float_is_refused_for_int_fields() -> None:
    message = error_of("train", {**VALID["train"], "epochs": 2.5})
    assert "'train.epochs' must be an integer" in message and "2.5" in message


def test_literal_choices_are_enforced() -> None:
    message = error_of("train", {**VALID["train"], "optimizer": "rmsprop"})
    assert "'train.optimizer'" in message
    assert "'sgd'" in message and "'adam'" in message
    assert "'rmsprop'" in message


@pytest.mark.parametrize("channels", ["auto", 1, 3])
def test_literal_channels_accepts_valid_choices(channels: int | str) -> None:
    cfg = parse_section("prepare", {**VALID["prepare"], "channels": channels}, stage="prepare")
    assert cfg.channels == channels


def test_literal_channels_refuses_other_ints() -> None:
    message = error_of("prepare", {**VALID["prepare"], "channels": 2}, stage="prepare")
    assert "'prepare.channels' must be one of 'auto', 1, 3" in message


def test_classes_must_be_a_list_of_strings() -> None:
    ok = parse_section("data", {**VALID["data"], "classes": ["a", "b", "c"]}, stage="download")
    assert ok.classes == ["a", "b", "c"]
    message = error_of("data", {**VALID["data"], "classes": ["normal", 3]}, stage="download")
    assert "'data.classes' must be a list of a string" in message
    message = error_of("data", {**VALID["data"], "classes": "normal"}, stage="download")
    assert "'data.classes'" in message and "'normal' (str)" in message


def test_class_folders_is_a_mapping_of_folder_names_to_class_names() -> None:
    mapping = {"adeno_T2_N0": "adeno", "large.cell_T2": "large.cell"}
    ok = parse_section("data", {**VALID["data"], "class_folders": mapping}, stage="download")
    assert ok.class_folders == mapping
    assert parse_section("data", {**VALID["data"], "class_folders": {}},
                         stage="download").class_folders == {}
    message = error_of("data", {**VALID["data"], "class_folders": {1: "a"}}, stage="download")
    assert ("'data.class_folders' must be a mapping of a string to a string or null, got "
            "{1: 'a'} (dict)") in message
    message = error_of("data", {**VALID["data"], "class_folders": ["a", "b"]}, stage="download")
    assert "'data.class_folders' must be a mapping" in message
    message = error_of("data", {**VALID["data"], "class_folders": {"train/a": "a"}},
                       stage="download")
    assert message == ("p.yaml: 'data.class_folders' must map folder names (not paths) to "
                       "class names, got {'train/a': 'a'} (stage download)")
    message = error_of("data", {**VALID["data"], "class_folders": {"a": ""}}, stage="download")
    assert "'data.class_folders' must map each folder to a class name" in message


# ----------------------------------------------------------------------------- load_section


def test_near_miss_top_level_section_is_an_error(tmp_path: Path) -> None:
    doc = copy.deepcopy(VALID)
    doc["trian"] = {"lr": 0.1}
    path = write_params(tmp_path / "params.yaml", doc)
    # Even a stage that reads another section refuses the typo.
    with pytest.raises(PipelineError) as info:
        load_section(path, "prepare", "prepare")
    message = str(info.value)
    assert "unknown section 'trian'" in message
    assert "did you mean 'train'" in message
    assert str(path) in message


def test_unrelated_top_level_section_is_accepted(tmp_path: Path) -> None:
    doc = copy.deepcopy(VALID)
    doc["notes"] = {"author": "me", "comment": "free-form"}
    path = write_params(tmp_path / "params.yaml", doc)
    cfg = load_section(path, "train", "train")
    assert cfg.model == "cnn"


def test_missing_section_is_named(tmp_path: Path) -> None:
    doc = copy.deepcopy(VALID)
    del doc["evaluate"]
    path = write_params(tmp_path / "params.yaml", doc)
    with pytest.raises(PipelineError, match=r"section 'evaluate' is missing \(stage evaluate\)"):
        load_section(path, "evaluate", "evaluate")


def _keys(node: Any, prefix: str = "") -> list[str]:
    """Every key of a nested mapping, dotted, at any depth (lists of mappings included)."""
    found = []
    if isinstance(node, dict):
        for key, value in node.items():
            found += [f"{prefix}{key}", *_keys(value, f"{prefix}{key}.")]
    elif isinstance(node, list):
        for item in node:
            found += _keys(item, prefix)
    return found


def test_no_param_is_named_like_dvc_file_metadata() -> None:
    """DVC drops keys named `size` or `nfiles`, at any depth, from the lock entry it hashes
    for its run cache (iterative/dvc#10296): a change of such a param would restore a
    stale output from the run cache instead of rerunning the stage."""
    doc = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))
    declared = [f"{section}.{f.name}" for section, cls in SECTIONS.items()
                for f in dataclasses.fields(cls)]
    for key in _keys(doc) + declared:
        assert key.rsplit(".", 1)[-1] not in DVC_RESERVED_KEYS, key


def test_renamed_key_names_its_new_name() -> None:
    values = {k: v for k, v in VALID["data"].items() if k != "resolution"}
    message = error_of("data", {**values, "size": 64}, stage="download")
    assert "'data.size' is now 'data.resolution'" in message


def test_empty_params_file_says_what_it_needs(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text("# nothing here\n", encoding="utf-8")
    with pytest.raises(PipelineError) as info:
        load_section(path, "data", "download")
    message = str(info.value)
    assert "\n" not in message and str(path) in message
    assert "is empty" in message and "data, prepare, plan, train, augment, evaluate" in message


def test_missing_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    with pytest.raises(PipelineError) as info:
        load_section(path, "train", "train")
    assert str(path) in str(info.value)
    assert "not found" in str(info.value)


def test_malformed_yaml_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("train:\n  model: [cnn\n  lr: 0.1\n", encoding="utf-8")
    with pytest.raises(PipelineError) as info:
        load_section(path, "train", "train")
    message = str(info.value)
    assert str(path) in message
    assert "not valid YAML" in message
    assert "\n" not in message


def test_yaml_that_is_not_a_mapping_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "list.yaml"
    path.write_text("- train\n- data\n", encoding="utf-8")
    with pytest.raises(PipelineError, match="expected a mapping"):
        load_section(path, "train", "train")


# ----------------------------------------------------------------- stage shells (subprocess)

TRAIN_CASES: dict[str, tuple[dict[str, Any], list[str]]] = {
    # case: (params document, strings the last stderr line must contain)
    "unknown_key": (
        {**VALID, "train": {**{k: v for k, v in VALID["train"].items() if k != "model"},
                            "modle": "cnn"}},
        ["train.modle", "did you mean 'model'"],
    ),
    "wrong_type": (doc_with("train", lr="fast"), ["train.lr", "a number", "'fast'"]),
    "unknown_model": (
        doc_with("train", model="resnet9000"),
        ["train.model", "resnet9000", "cnn", "mobilenet_v2"],
    ),
}


@pytest.fixture(scope="module")
def stage_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """Run every failing stage invocation once.

    Importing torch and scikit-learn from source takes seconds, so the runs share a private
    bytecode cache: one train run fills it (while the cheap download run goes alongside),
    then the other train runs read it, concurrently.
    """
    base = tmp_path_factory.mktemp("stages")
    env = {**os.environ, "PYTHONPYCACHEPREFIX": str(base / "pycache")}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    runs: dict[str, dict[str, Any]] = {}
    for name, (doc, _) in TRAIN_CASES.items():
        d = base / name
        d.mkdir()
        params = write_params(d / "params.yaml", doc)
        outputs = [d / "m.pt", d / "train.json", d / "live"]
        cmd = [sys.executable, "-m", "stages.train", "--params", str(params),
               "--data", str(d / "prepared"), "--model", str(outputs[0]),
               "--metrics", str(outputs[1]), "--live", str(outputs[2])]
        runs[name] = {"cmd": cmd, "dir": d, "outputs": outputs}
    d = base / "download"
    d.mkdir()
    params = write_params(d / "params.yaml", doc_with("data", classes=["normal", "tumour"]))
    out = d / "raw"
    runs["download"] = {
        "cmd": [sys.executable, "-m", "stages.download", "--params", str(params),
                "--out", str(out)],
        "dir": d,
        "outputs": [out],
    }

    def start(name: str) -> subprocess.Popen:
        return subprocess.Popen(runs[name]["cmd"], cwd=REPO, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)

    def finish(name: str, proc: subprocess.Popen) -> None:
        stdout, stderr = proc.communicate(timeout=300)
        runs[name].update(rc=proc.returncode, stdout=stdout, stderr=stderr)

    first, *rest = sorted(TRAIN_CASES)
    waves = [[first, "download"], rest]
    for wave in waves:
        procs = {name: start(name) for name in wave}
        for name, proc in procs.items():
            finish(name, proc)
    return runs


def last_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    assert lines, "stderr is empty"
    return lines[-1]


def assert_clean_failure(run: dict[str, Any], stage: str, needles: list[str]) -> None:
    assert run["rc"] != 0, run["stderr"]
    assert "Traceback" not in run["stderr"], run["stderr"]
    line = last_line(run["stderr"])
    assert line.startswith("error:"), line
    assert f"stage {stage}" in line, line
    for needle in needles:
        assert needle in line, (needle, line)
    for out in run["outputs"]:
        assert not out.exists(), f"{out} was written by a failed run"
    leftovers = [p.name for p in run["dir"].iterdir() if p.name.startswith(".tmp-")]
    assert not leftovers, leftovers


@pytest.mark.parametrize("case", sorted(TRAIN_CASES))
def test_train_stage_fails_with_one_line_error(stage_runs: dict, case: str) -> None:
    assert_clean_failure(stage_runs[case], "train", TRAIN_CASES[case][1])


def test_download_stage_refuses_unknown_class(stage_runs: dict) -> None:
    assert_clean_failure(stage_runs["download"], "download", ["data.classes", "tumour"])



@pytest.mark.parametrize(
    ("stage", "section", "change", "needles"),
    [
        ("prepare", "prepare", {"channels": 2}, ["'prepare.channels'", "one of 'auto', 1, 3"]),
        ("evaluate", "evaluate", {"split": "train"}, ["'evaluate.split'", "'train'"]),
        ("train", "train", {"optimizer": "rmsprop"}, ["'train.optimizer'", "'rmsprop'"]),
    ],
)
def test_stage_shell_in_process_exits_1_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], restore_logging: None, stage: str,
    section: str, change: dict[str, Any], needles: list[str],
) -> None:
    """The same shell (``cli.run`` + the stage's ``main``), without a new interpreter."""
    module = importlib.import_module(f"stages.{stage}")
    params = write_params(tmp_path / "params.yaml", doc_with(section, **change))
    outputs = {"train": ["--model", str(tmp_path / "m.pt"), "--metrics", str(tmp_path / "t.json"),
                         "--live", str(tmp_path / "live"), "--data", str(tmp_path / "d")],
               "prepare": ["--raw", str(tmp_path / "raw"), "--out", str(tmp_path / "prepared"),
                           "--metrics", str(tmp_path / "p.json")],
               "evaluate": ["--model", str(tmp_path / "m.pt"), "--data", str(tmp_path / "d"),
                            "--metrics", str(tmp_path / "e.json"),
                            "--plots", str(tmp_path / "plots")]}[stage]
    with pytest.raises(SystemExit) as info:
        cli.run(stage, module.main, module.get_args_parser(),
                ["--params", str(params), *outputs])
    assert info.value.code == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    line = last_line(err)
    assert line.startswith("error:") and f"stage {stage}" in line, line
    for needle in needles:
        assert needle in line, (needle, line)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]


@pytest.mark.parametrize(("section", "stage"), [("data", "download"), ("prepare", "prepare"),
                                                ("train", "train"), ("evaluate", "evaluate")])
@pytest.mark.parametrize("seed", [-1, 2**32])
def test_seed_out_of_range_is_named(section: str, stage: str, seed: int) -> None:
    message = error_of(section, {**VALID[section], "seed": seed}, stage=stage)
    assert f"'{section}.seed' must be between 0 and 4294967295, got {seed}" in message


@pytest.mark.parametrize(("classes", "expected"), [
    (["a", "a", "b"], "'data.classes' names class 'a' twice; each class is listed once"),
    (["a", "b", "b", "a"], "'data.classes' names class 'a' twice"),
    (["a", ""], "'data.classes' must list class names (an empty name is given)"),
    (["a"], "'data.classes' must list at least 2 distinct classes, or be null"),
])
def test_a_bad_class_list_names_what_is_wrong(classes: list[str], expected: str) -> None:
    assert expected in error_of("data", {**VALID["data"], "classes": classes}, stage="download")
