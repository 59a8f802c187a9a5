"""Set params.yaml to a named recipe: every stage key back to its default, then the recipe's.

    medpipe recipe pneumoniamnist          # then: dvc exp run (or dvc repro)
    medpipe recipe --list

A recipe is ``recipes/<name>.yaml``: the keys it changes, by section. The result does not
depend on what params.yaml held before (a previous recipe, ``dvc exp run -S`` changes):
the stage sections are reset to the defaults of :mod:`medpipe.params` first. Comments,
key order and sections of your own are kept. The file is checked as the stages check it
before it is written, and written atomically.
"""

from __future__ import annotations

import argparse
import io
import logging
from pathlib import Path
from typing import Any

import yaml
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedSeq

from medpipe import PipelineError
from medpipe.params.loading import defaults, load_yaml, parse_section
from medpipe.params.sections import STAGE_SECTIONS
from medpipe.planning import recipe as plans
from medpipe.utils.files import atomic_path

log = logging.getLogger(__name__)

STAGE_OF = {"data": "download", "prepare": "prepare", "plan": "plan", "train": "train",
            "augment": "train", "evaluate": "evaluate"}


def available(folder: Path) -> list[str]:
    """The recipe names in ``folder``."""
    return sorted(p.stem for p in folder.glob("*.yaml"))


def read_recipe(folder: Path, name: str) -> dict[str, dict[str, Any]]:
    """The sections and keys of ``folder/name.yaml``, each key checked to exist."""
    path = folder / f"{name}.yaml"
    if not path.is_file():
        names = ", ".join(available(folder)) or "none"
        raise PipelineError(f"{path}: no such recipe (recipes in {folder}: {names})")
    try:
        recipe = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise PipelineError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(recipe, dict):
        raise PipelineError(f"{path}: expected a mapping of params sections")
    recipe.pop(plans.MARK, None)  # a plan's data/plan.yaml, copied, is a recipe too
    for section, values in recipe.items():
        if section not in STAGE_SECTIONS or not isinstance(values, dict):
            raise PipelineError(f"{path}: '{section}' is not a params section with keys "
                                f"(sections: {', '.join(STAGE_SECTIONS)})")
        unknown = [key for key in values if key not in defaults(section)]
        if unknown:
            raise PipelineError(f"{path}: unknown key '{section}.{unknown[0]}'")
    return recipe


def same(old: Any, new: Any) -> bool:
    """Equal as params (3 and 3.0 are the same number; true is not 1)."""
    if isinstance(old, list) and isinstance(new, list):
        return len(old) == len(new) and all(map(same, old, new))
    numbers = (int, float)
    if isinstance(old, numbers) and isinstance(new, numbers):
        return isinstance(old, bool) == isinstance(new, bool) and old == new
    return type(old) is type(new) and old == new


def flow(value: Any) -> Any:
    """A list written on one line, ``[a, b]``, as params.yaml writes lists."""
    if not isinstance(value, list):
        return value
    seq = CommentedSeq(value)
    seq.fa.set_flow_style()
    return seq


def apply(params_path: Path, recipe: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Rewrite ``params_path``: each stage section's keys set to default then ``recipe``'s
    values. Returns the stage sections written."""
    load_yaml(params_path)  # a missing or malformed file: its one-line error
    rt = YAML()  # round trip: comments and key order survive
    rt.width = 4096
    rt.representer.add_representer(  # null, as params.yaml spells it (not an empty value)
        type(None), lambda r, _: r.represent_scalar("tag:yaml.org,2002:null", "null"))
    doc = rt.load(params_path.read_text(encoding="utf-8"))
    result = {}
    for section in STAGE_SECTIONS:
        values = {**defaults(section), **recipe.get(section, {})}
        if section not in doc or doc[section] is None:
            doc[section] = {}
        for key, value in values.items():
            if not same(doc[section].get(key), value):  # else keep the file's spelling
                doc[section][key] = flow(value)
        for key in [k for k in doc[section] if k not in values]:
            del doc[section][key]  # what parse_section would refuse
        result[section] = values
        parse_section(section, dict(doc[section]), stage=STAGE_OF[section],
                      where=str(params_path))
    out = io.StringIO()
    rt.dump(doc, out)
    with atomic_path(params_path) as tmp:
        tmp.write_text(out.getvalue(), encoding="utf-8")
    return result


def main(args: argparse.Namespace) -> None:
    folder = Path(args.recipes)
    if args.list or args.name is None:
        print("\n".join(available(folder)))
        return
    apply(Path(args.params), read_recipe(folder, args.name))
    log.info("%s: recipe %s applied; run 'dvc exp run' (or 'dvc repro')", args.params,
             args.name)


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="medpipe recipe", description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("name", nargs="?", help="recipe name (recipes/<name>.yaml)")
    p.add_argument("--list", action="store_true", help="list the recipes and exit")
    p.add_argument("--params", default="params.yaml", help="params file to rewrite")
    p.add_argument("--recipes", default="recipes", help="folder of recipe files")
    return p
