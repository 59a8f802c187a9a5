"""Reading ``params.yaml``: each section parsed into its dataclass, keys and types checked,
then the value rules; every problem one line naming the key and the stage."""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from pathlib import Path
from typing import Any, Literal

import yaml

from medpipe import PipelineError
from medpipe.params import external
from medpipe.params.sections import RENAMED, SECTIONS, STAGE_SECTIONS


def load_yaml(path: Path) -> dict[str, Any]:
    """Read ``params.yaml`` as a mapping; a missing or malformed file is a PipelineError."""
    try:
        with open(path, encoding="utf-8") as f:
            doc = yaml.safe_load(f)
    except FileNotFoundError:
        raise PipelineError(f"{path}: file not found") from None
    except yaml.YAMLError as e:
        raise PipelineError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    if doc is None or doc == {}:
        raise PipelineError(
            f"{path}: is empty; it needs the sections {', '.join(STAGE_SECTIONS)} with every "
            f"key set (restore it with 'git checkout {path.name}')")
    if not isinstance(doc, dict):
        raise PipelineError(f"{path}: expected a mapping of sections, got {type(doc).__name__}")
    return doc


def load_section(path: Path | str, section: str, stage: str) -> Any:
    """Load and validate one section of ``params.yaml`` for ``stage``, after checking the
    whole file (:func:`check_all`)."""
    path = Path(path)
    doc = load_yaml(path)
    _check_top_level(doc, path, stage)
    if section not in doc:
        raise PipelineError(f"{path}: section '{section}' is missing (stage {stage})")
    cfg = parse_section(section, doc[section], stage=stage, where=str(path))
    check_all(doc, path, stage)
    return cfg


# The stage that reads each section, named in an error about it.
READ_BY = {"data": "download", "prepare": "prepare", "plan": "plan", "train": "train",
           "augment": "train", "evaluate": "evaluate", "external": "external"}


def check_all(doc: dict[str, Any], path: Path, stage: str) -> None:
    """Check every section of ``doc`` that is present, ``external`` included, so that a
    mistake in a section that a later stage reads stops whichever stage runs first, before
    the expensive ones (docs/params.md). A check only: nothing it reads reaches the
    stage's outputs, which is why a stage lists in dvc.yaml only the params it uses."""
    for section in SECTIONS:
        if section in doc:
            parse_section(section, doc[section], stage=_reader(section, stage),
                          where=str(path))
    external_sets(doc, path, stage)


def load_external(path: Path | str, name: str, stage: str = "external") -> Any:
    """The ``data`` keys of the external set ``name`` (:mod:`medpipe.params.external`),
    checked, as a ``DataParams``; the whole file is checked first."""
    path = Path(path)
    doc = load_yaml(path)
    _check_top_level(doc, path, stage)
    if "data" not in doc:
        raise PipelineError(f"{path}: section 'data' is missing (stage {stage})")
    check_all(doc, path, stage)
    sets = external_sets(doc, path, stage)
    if name not in sets:
        raise PipelineError(f"{path}: no external set '{name}' (section 'external' has "
                            f"{', '.join(sets) or 'none'}) (stage {stage})")
    return sets[name]


def external_sets(doc: dict[str, Any], path: Path, stage: str) -> dict[str, Any]:
    """Every set of the ``external`` section by name, each a checked ``DataParams``."""
    sets, label = doc.get("external") or {}, _reader("external", stage)
    if not isinstance(sets, dict):
        raise PipelineError(f"{path}: 'external' must be a mapping of set names to data keys, "
                            f"got {_show(sets)} (stage {label})")
    data = doc.get("data") if isinstance(doc.get("data"), dict) else {}
    out = {}
    for name, entry in sets.items():
        problem = external.name_problem(name)
        if problem:
            raise PipelineError(f"{path}: {problem} (stage {label})")
        if not isinstance(entry, dict) or "path" not in entry:
            raise PipelineError(f"{path}: 'external.{name}' must be a mapping with at least "
                                "'path' (the dataset folder DVC watches; data/external for a "
                                f"source without one) (stage {label})")
        fields = defaults("data")
        unknown = [k for k in entry if k not in fields]
        if unknown:
            raise PipelineError(f"{path}: 'external.{name}.{unknown[0]}' is not a key of "
                                f"'data' (stage {label})")
        out[name] = parse_section("data", external.entry_values(data, entry, fields),
                                  stage=label, where=f"{path}: external.{name}")
    return out


def _reader(section: str, stage: str) -> str:
    """The stage named in an error about ``section`` found while ``stage`` loads."""
    reader = READ_BY[section]
    return reader if reader == stage else f"{reader}, checked by stage {stage}"


def parse_section(section: str, values: Any, *, stage: str, where: str = "params.yaml") -> Any:
    """Build the dataclass of ``section`` from a mapping, checking keys and types."""
    cls = SECTIONS[section]
    if not isinstance(values, dict):
        raise PipelineError(
            f"{where}: '{section}' must be a mapping of keys, got {_show(values)} (stage {stage})"
        )
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    for key in values:
        if f"{section}.{key}" in RENAMED:
            raise PipelineError(f"{where}: '{section}.{key}' is now "
                                f"'{RENAMED[f'{section}.{key}']}'; rename it (stage {stage})")
        if key not in fields:
            hint = _did_you_mean(str(key), fields)
            raise PipelineError(f"{where}: unknown key '{section}.{key}'{hint} (stage {stage})")
    missing = [name for name in fields if name not in values]
    if missing:
        raise PipelineError(
            f"{where}: missing key '{section}.{missing[0]}' (stage {stage}); "
            f"every key of '{section}' must be set"
        )
    parsed = {}
    for name in fields:
        ok, value = _coerce(values[name], hints[name])
        if not ok:
            choices = [c for c in typing.get_args(hints[name]) if isinstance(c, str)]
            hint = _did_you_mean(values[name], choices) if isinstance(values[name], str) else ""
            raise PipelineError(
                f"{where}: '{section}.{name}' must be {_describe(hints[name])}, "
                f"got {_show(values[name])}{hint} (stage {stage})"
            )
        parsed[name] = value
    return validate(cls(**parsed), stage=stage, where=where)


def validate(cfg: Any, *, stage: str, where: str = "params.yaml") -> Any:
    """Check ``cfg`` (a section's dataclass) against the rules declared beside its fields
    and its ``check`` across fields; return it, or raise a one-line PipelineError."""
    section = next(name for name, cls in SECTIONS.items() if isinstance(cfg, cls))
    for f in dataclasses.fields(cfg):
        rule = f.metadata.get("check")
        value = getattr(cfg, f.name)
        problem = rule(value) if rule else None
        if problem:
            raise PipelineError(f"{where}: '{section}.{f.name}' {problem}, got {value!r} "
                                f"(stage {stage})")
    problem = cfg.check() if hasattr(cfg, "check") else None
    if problem:
        raise PipelineError(f"{where}: {problem} (stage {stage})")
    return cfg


def defaults(section: str) -> dict[str, Any]:
    """The default value of every key of ``section``: the committed params.yaml's."""
    return {f.name: (f.default_factory() if f.default is dataclasses.MISSING
                     else f.default) for f in dataclasses.fields(SECTIONS[section])}


def _check_top_level(doc: dict, path: Path, stage: str) -> None:
    # A near-miss of a stage section ('trian') is almost surely a typo: refuse it. Any
    # other extra section is the user's own and no stage reads it.
    for key in doc:
        if key in SECTIONS:
            continue
        close = difflib.get_close_matches(str(key), SECTIONS, n=1, cutoff=0.75)
        if close:
            raise PipelineError(
                f"{path}: unknown section '{key}' (did you mean '{close[0]}'?) (stage {stage})"
            )


def _did_you_mean(key: str, valid: typing.Iterable[str]) -> str:
    close = difflib.get_close_matches(key, list(valid), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _coerce(value: Any, hint: Any) -> tuple[bool, Any]:
    """Return (ok, value) for ``value`` checked against a type hint. Ints pass as floats;
    bools never pass as numbers (YAML's ``yes`` is not a learning rate)."""
    origin = typing.get_origin(hint)
    if origin is Literal:
        # 1 == True in Python: compare types too, so `channels: true` is refused.
        ok = any(value == c and type(value) is type(c) for c in typing.get_args(hint))
        return ok, value
    if origin in (list,):
        (item,) = typing.get_args(hint)
        if not isinstance(value, list):
            return False, value
        out = []
        for v in value:
            ok, v = _coerce(v, item)
            if not ok:
                return False, value
            out.append(v)
        return True, out
    if origin is dict:
        key_hint, value_hint = typing.get_args(hint)
        if not isinstance(value, dict):
            return False, value
        out = {}
        for k, v in value.items():
            ok_key, k = _coerce(k, key_hint)
            ok_value, v = _coerce(v, value_hint)
            if not (ok_key and ok_value):
                return False, value
            out[k] = v
        return True, out
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(hint):
            ok, v = _coerce(value, option)
            if ok:
                return True, v
        return False, value
    if hint is type(None):
        return value is None, value
    if hint is bool:
        return isinstance(value, bool), value
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if hint is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        return ok, float(value) if ok else value
    if hint is str:
        return isinstance(value, str), value
    raise TypeError(f"unsupported type hint {hint!r}")


def _describe(hint: Any) -> str:
    origin = typing.get_origin(hint)
    if origin is Literal:
        return "one of " + ", ".join(repr(c) for c in typing.get_args(hint))
    if origin is list:
        return f"a list of {_describe(typing.get_args(hint)[0])}"
    if origin is dict:
        key_hint, value_hint = typing.get_args(hint)
        return f"a mapping of {_describe(key_hint)} to {_describe(value_hint)}"
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(h) for h in typing.get_args(hint))
    if hint is type(None):
        return "null"
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}[hint]


def _show(value: Any) -> str:
    return f"{value!r} ({type(value).__name__})"


def require(condition: bool, section: str, key: str, message: str, stage: str) -> None:
    """Raise a one-line PipelineError about ``section.key`` unless ``condition`` holds."""
    if not condition:
        raise PipelineError(f"params.yaml: '{section}.{key}' {message} (stage {stage})")
