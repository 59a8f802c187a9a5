"""The documentation (README.md, docs/*.md, CHANGELOG.md) says what the code and the
committed results say.

- A figure quoted from a committed metrics file carries a marker right after it,
  ``0.9367<!-- metrics/evaluate.json:accuracy -->``: the file, then the dotted key (list
  items by index, ``mean.0``). The figure must equal the value rounded to the decimals
  shown.
- Every relative link points at an existing file, and an anchor into a Markdown page at
  one of its headings (GitHub's heading ids).
- Every key of params.yaml is in a table row of docs/params.md with its default.
- README.md stays short and keeps the two Quickstart lines verbatim (CI greps the test
  line).
- The recipe table of docs/experiments.md holds the recipes' values.
- Every module path (``medpipe/...py``, ``stages/...py``, a folder of either) and every
  dotted name (``medpipe.x.y``) that README.md and docs/*.md quote exists: the file or
  folder, the module, the attribute. CHANGELOG.md is history and may name what is gone.

Each check is a function returning its problems, so that the tests at the end can show
that it finds them.
"""

from __future__ import annotations

import json
import re
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
PAGES = ("getting-started", "data", "params", "pipeline", "training", "evaluation",
         "predict-and-export", "experiments", "sharing", "benchmarks", "development")
QUICKSTART = ("python3 -m pip install uv && python3 -m uv run dvc repro",
              "python3 -m pip install uv && python3 -m uv run pytest")
README_MAX_LINES = 250
SECTIONS = ("data", "prepare", "plan", "train", "augment", "evaluate")

# Spellings of commands and keys that no longer exist, and what replaced them: a line may
# name the old spelling only next to the new one ("`data.size` is now `data.resolution`").
OUTDATED = {r"python3? -m medpipe\.(predict|export|share)\b": "medpipe ",
            r"\bdata\.size\b": "data.resolution"}

# A path under medpipe/ or stages/ (not the tail of a longer one such as tests/stages/...),
# and a dotted name under medpipe (not a file name such as medpipe.json).
CODE_PATH = re.compile(r"(?<![\w./-])((?:medpipe|stages)/[\w./-]*[\w/])")
DOTTED_NAME = re.compile(r"(?<![\w./-])(medpipe(?:\.[A-Za-z_]\w*)+)")
FILE_SUFFIXES = {"json", "yaml", "yml", "csv", "md", "txt", "onnx", "ts", "pt", "png"}
MARKER = re.compile(r"<!--\s*(metrics/[\w./-]+\.json):([\w.-]+)\s*-->")
NUMBER_AT_END = re.compile(r"(-?\d+(?:\.\d+)?)\Z")
LINK = re.compile(r"\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")
SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


def doc_files() -> list[Path]:
    return [README, *sorted(DOCS.glob("*.md")), ROOT / "CHANGELOG.md"]


def without_fences(text: str) -> str:
    """``text`` with the lines of fenced code blocks blanked (line count kept)."""
    out, fence = [], None
    for line in text.splitlines():
        mark = re.match(r"^\s*(`{3,}|~{3,})", line)
        if fence is None and mark:
            fence = mark.group(1)
            out.append("")
        elif fence is not None:
            if line.strip().startswith(fence):
                fence = None
            out.append("")
        else:
            out.append(line)
    return "\n".join(out)


def prose(text: str) -> str:
    """``text`` without fenced code blocks and inline code spans: what renders as text."""
    return re.sub(r"`[^`\n]*`", "", without_fences(text))


def lookup(doc: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        doc = doc[int(part)] if isinstance(doc, list) else doc[part]
    return doc


# --- checks -----------------------------------------------------------------------------


def marker_problems(path: Path, root: Path = ROOT) -> list[str]:
    """Markers whose figure is missing or differs from the metrics file."""
    text, problems, loaded = prose(path.read_text(encoding="utf-8")), [], {}
    for m in MARKER.finditer(text):
        where = f"{path.name}: {m.group(0)}"
        before = NUMBER_AT_END.search(text[: m.start()])
        if before is None:
            problems.append(f"{where}: no number right before the marker")
            continue
        shown, file, key = before.group(1), m.group(1), m.group(2)
        if file not in loaded:
            try:
                loaded[file] = json.loads((root / file).read_text(encoding="utf-8"))
            except (OSError, ValueError) as e:
                problems.append(f"{where}: cannot read {file} ({e})")
                continue
        try:
            value = lookup(loaded[file], key)
        except (KeyError, IndexError, ValueError, TypeError):
            problems.append(f"{where}: {file} has no key {key}")
            continue
        if isinstance(value, bool) or not isinstance(value, int | float):
            problems.append(f"{where}: {file}:{key} is {value!r}, not a number")
            continue
        decimals = len(shown.partition(".")[2])
        # Rounded as people round: half up, from the shortest decimal form of the value.
        expected = str(Decimal(repr(value)).quantize(Decimal(1).scaleb(-decimals),
                                                     rounding=ROUND_HALF_UP))
        if expected.startswith("-") and Decimal(expected) == 0:
            expected = expected[1:]
        if shown != expected:
            problems.append(f"{where}: the docs say {shown}, {file} says {value} "
                            f"({expected} to {decimals} decimals)")
    return problems


def slug(heading: str) -> str:
    """GitHub's id for a heading: lower case, markup and punctuation dropped, spaces to
    hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link: its text
    text = re.sub(r"<[^>]*>", "", text).replace("`", "").strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    found: set[str] = set()
    for line in without_fences(path.read_text(encoding="utf-8")).splitlines():
        m = HEADING.match(line)
        if m:
            base = slug(m.group(2))
            name, n = base, 0
            while name in found:
                n += 1
                name = f"{base}-{n}"
            found.add(name)
    return found


def link_problems(path: Path) -> list[str]:
    """Relative links to a file that does not exist, or to a heading that does not."""
    problems = []
    for m in LINK.finditer(prose(path.read_text(encoding="utf-8"))):
        target = m.group(1)
        if SCHEME.match(target):
            continue
        file, _, anchor = target.partition("#")
        dest = (path.parent / file).resolve() if file else path
        if not dest.exists():
            problems.append(f"{path.name}: link to {target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            problems.append(f"{path.name}: link to {target}: no heading '#{anchor}' "
                            f"in {dest.name}")
    return problems


def wording_problems(path: Path, patterns: dict[str, str]) -> list[str]:
    """Lines matching one of ``patterns``, unless the line also holds the pattern's
    replacement."""
    problems = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        for pattern, replacement in patterns.items():
            if replacement in re.sub(pattern, "", line):
                continue
            for m in re.finditer(pattern, line, re.IGNORECASE):
                problems.append(f"{path.name}:{n}: '{m.group(0)}' in: {line.strip()}")
    return problems


def table_rows(text: str) -> list[list[str]]:
    """The cells of every Markdown table row (``\\|`` inside a cell is kept)."""
    rows = []
    for line in without_fences(text).splitlines():
        line = line.strip()
        if line.startswith("|") and line.endswith("|"):
            rows.append([c.strip() for c in re.split(r"(?<!\\)\|", line[1:-1])])
    return rows


def code_value(cell: str) -> tuple[bool, Any]:
    """(True, the YAML value) of a cell that is one code span, else (False, None)."""
    m = re.fullmatch(r"`([^`]*)`", cell)
    return (True, yaml.safe_load(m.group(1).replace("\\|", "|"))) if m else (False, None)


def same(a: Any, b: Any) -> bool:
    """Equal and of the same type (so 0 is not false, nor 1 the same as 1.0)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def flatten(doc: dict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for key, value in doc.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def params_problems(params: dict, page: str) -> list[str]:
    """Keys of ``params`` missing from the tables of ``page``, with another default, or
    documented there but not in ``params``; stage sections without a heading."""
    flat = {k: v for k, v in flatten(params).items() if k.split(".")[0] in SECTIONS}
    rows = {}
    for cells in table_rows(page):
        m = re.fullmatch(r"`([a-z_]+\.[a-z_0-9]+)`", cells[0])
        if m and len(cells) > 1:
            rows[m.group(1)] = cells[1]
    problems = [f"params.md: no '## {s}' heading" for s in SECTIONS
                if not re.search(rf"^## {s}\s*$", page, re.M)]
    for key, value in flat.items():
        if key not in rows:
            problems.append(f"params.md: {key} is not documented")
            continue
        ok, shown = code_value(rows[key])
        if not ok or not same(shown, value):
            problems.append(f"params.md: {key} default {rows[key]}, params.yaml has {value!r}")
    problems += [f"params.md: {key} is not in params.yaml" for key in rows if key not in flat]
    return problems


def recipe_problems(recipes: dict[str, dict[str, Any]], defaults: dict[str, Any],
                    page: str) -> list[str]:
    """Differences between the recipe table of ``page`` and ``recipes``."""
    rows = table_rows(page)
    header = next((r for r in rows if r and r[0] == "key"
                   and any(f"`{name}`" in r for name in recipes)), None)
    if header is None:
        return ["experiments.md: no recipe table (a 'key' column, one column per recipe)"]
    names = [c.strip("`") for c in header[1:]]
    problems = [f"experiments.md: no column for recipe {n}" for n in recipes if n not in names]
    problems += [f"experiments.md: column {n} is no recipe" for n in names if n not in recipes]
    table = {}
    for cells in rows:
        m = re.fullmatch(r"`([a-z_]+\.[a-z_0-9]+)`", cells[0]) if cells else None
        if m and len(cells) == len(header):
            table[m.group(1)] = dict(zip(names, cells[1:], strict=True))
    for name, values in recipes.items():
        for key in values:
            if key not in table:
                problems.append(f"experiments.md: recipe {name} sets {key}, not in the table")
        for key, cells in table.items():
            cell = cells.get(name)
            if cell is None:
                continue
            if cell == "—":
                if key in values and not same(values[key], defaults.get(key)):
                    problems.append(f"experiments.md: {name} {key} shown as default, "
                                    f"the recipe sets {values[key]!r}")
                continue
            ok, shown = code_value(cell)
            if key not in values:
                problems.append(f"experiments.md: {name} {key} is {cell}, the recipe "
                                "leaves it at its default")
            elif not ok or not same(shown, values[key]):
                problems.append(f"experiments.md: {name} {key} is {cell}, the recipe sets "
                                f"{values[key]!r}")
    return problems


def recipes() -> dict[str, dict[str, Any]]:
    """The params each recipe in recipes/*.yaml changes (``default`` changes none, so it
    has no column in the table)."""
    out = {}
    for path in sorted((ROOT / "recipes").glob("*.yaml")):
        flat = flatten(yaml.safe_load(path.read_text(encoding="utf-8")) or {})
        if flat:
            out[path.stem] = {k: v for k, v in flat.items() if k.split(".")[0] in SECTIONS}
    return out


def params_yaml() -> dict:
    return yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))


# --- the documentation ------------------------------------------------------------------


def test_readme_is_at_most_250_lines() -> None:
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines"


@pytest.mark.parametrize("line", QUICKSTART)
def test_readme_has_the_quickstart_line_verbatim(line: str) -> None:
    assert line in README.read_text(encoding="utf-8").splitlines()


def test_every_docs_page_exists_and_the_readme_links_it() -> None:
    text = README.read_text(encoding="utf-8")
    missing = [p for p in PAGES if not (DOCS / f"{p}.md").is_file()]
    unlinked = [p for p in PAGES if f"(docs/{p}.md" not in text]
    assert not missing and not unlinked, f"missing {missing}, not linked {unlinked}"


def test_quoted_figures_match_the_metrics_files() -> None:
    files = doc_files()
    assert sum(len(MARKER.findall(prose(f.read_text(encoding="utf-8")))) for f in files) > 10
    problems = [p for f in files for p in marker_problems(f)]
    assert not problems, "\n".join(problems)


def test_relative_links_and_anchors_resolve() -> None:
    problems = [p for f in doc_files() for p in link_problems(f)]
    assert not problems, "\n".join(problems)


def test_docs_use_current_command_and_key_names() -> None:
    # The changelog is history: it names what was renamed.
    files = [f for f in doc_files() if f.name != "CHANGELOG.md"]
    problems = [p for f in files for p in wording_problems(f, OUTDATED)]
    assert not problems, "\n".join(problems)


def test_every_param_is_documented_with_its_default() -> None:
    problems = params_problems(params_yaml(), (DOCS / "params.md").read_text(encoding="utf-8"))
    assert not problems, "\n".join(problems)


def test_recipe_table_holds_the_recipes() -> None:
    found = recipes()
    assert found, "no recipes found"
    problems = recipe_problems(found, flatten(params_yaml()),
                               (DOCS / "experiments.md").read_text(encoding="utf-8"))
    assert not problems, "\n".join(problems)


# --- each check finds what it is for ----------------------------------------------------


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_marker_check_finds_wrong_missing_and_unknown_figures(tmp_path: Path) -> None:
    write(tmp_path, "metrics/m.json", json.dumps({"a": {"b": 0.93666}, "l": [0.25], "s": "x"}))
    good = write(tmp_path, "good.md", "acc 0.9367<!-- metrics/m.json:a.b --> and "
                 "0.3<!-- metrics/m.json:l.0 -->; `9<!-- metrics/m.json:a.b -->` is code")
    assert marker_problems(good, tmp_path) == []
    for text in ("0.9366<!-- metrics/m.json:a.b -->",  # rounded wrongly
                 "0.94<!-- metrics/m.json:a.b -->x 0.936<!-- metrics/m.json:a.b -->",  # 2nd
                 "about <!-- metrics/m.json:a.b -->",  # no figure
                 "1<!-- metrics/m.json:a.c -->",  # no such key
                 "1<!-- metrics/m.json:s -->",  # not a number
                 "1<!-- metrics/gone.json:a -->"):  # no such file
        assert len(marker_problems(write(tmp_path, "bad.md", text), tmp_path)) == 1, text


def test_link_check_finds_missing_files_and_headings(tmp_path: Path) -> None:
    write(tmp_path, "docs/page.md", "# Page\n\n## The `folder` source: bench/x.py\n\n## Two\n")
    good = write(tmp_path, "README.md", "[a](docs/page.md) [b](docs/page.md#two) "
                 "[c](docs/page.md#the-folder-source-benchxpy) [d](https://x.org/y#z) "
                 "[e](#top)\n\n# Top\n\n```\n[f](nowhere.md)\n```\n")
    assert link_problems(good) == []
    for text in ("[a](docs/gone.md)", "[a](docs/page.md#three)", "[a](#nowhere)"):
        assert len(link_problems(write(tmp_path, "README.md", text))) == 1, text


def test_outdated_name_check_finds_old_spellings(tmp_path: Path) -> None:
    path = write(tmp_path, "a.md",
                 "Obsolete: python -m medpipe.predict, data.size. InferenceSession is fine.\n"
                 "Renamed: `data.size` is now `data.resolution`.\n")
    assert len(wording_problems(path, OUTDATED)) == 2


def test_params_check_finds_missing_wrong_and_unknown_keys() -> None:
    params = {"data": {"seed": 0, "classes": ["a", "b"]}, "prepare": {"on_error": "fail"},
              "train": {"lr": 0.003, "compile": False}, "augment": {"scale": [0.9, 1.1]},
              "evaluate": {"seed": 0}, "notes": {"free": 1}}
    head = "## data\n## prepare\n## plan\n## train\n## augment\n## evaluate\n"
    rows = ["| `data.seed` | `0` | download | seed |", "| `data.classes` | `[a, b]` | d | x |",
            "| `prepare.on_error` | `fail` | p | x |", "| `train.lr` | `0.003` | t | x |",
            "| `train.compile` | `false` | t | x |", "| `augment.scale` | `[0.9, 1.1]` | t | x |",
            "| `evaluate.seed` | `0` | e | x |"]
    assert params_problems(params, head + "\n".join(rows)) == []
    bad = [rows[1:],  # data.seed missing
           [rows[0].replace("`0`", "`1`"), *rows[1:]],  # another default
           [rows[0].replace("`0`", "`false`"), *rows[1:]],  # false is not 0
           [*rows, "| `train.size` | `1` | t | x |"]]  # no such key
    for table in bad:
        assert len(params_problems(params, head + "\n".join(table))) == 1
    assert len(params_problems(params, head.replace("## augment\n", "") + "\n".join(rows))) == 1


def test_recipe_check_finds_differences() -> None:
    found = {"one": {"train.lr": 0.01, "train.ema": 0.99}, "two": {"train.lr": 0.02}}
    defaults = {"train.lr": 0.003, "train.ema": 0.0}
    table = ("| key | `one` | `two` |\n|---|---|---|\n"
             "| `train.lr` | `0.01` | `0.02` |\n| `train.ema` | `0.99` | — |\n")
    assert recipe_problems(found, defaults, table) == []
    for text in (table.replace("`0.02`", "`0.03`"), table.replace("`0.99`", "—"),
                 table.replace("| `train.ema` | `0.99` | — |\n", ""),
                 table.replace("| `train.ema` | `0.99` | — |", "| `train.ema` | `0.99` | `0.5` |")):
        assert len(recipe_problems(found, defaults, text)) == 1, text


def resolves(name: str) -> bool:
    """A path exists, or a dotted name imports: the longest module prefix, then its
    attributes."""
    import importlib

    if "/" in name:
        return (ROOT / name).exists()
    parts = name.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for attr in parts[cut:]:
            if not hasattr(obj, attr):
                return False
            obj = getattr(obj, attr)
        return True
    return False


def code_names(path: Path) -> set[str]:
    """The module paths and dotted names ``path`` quotes."""
    text = path.read_text(encoding="utf-8")
    names = set(CODE_PATH.findall(text))
    names |= {n for n in DOTTED_NAME.findall(text)
              if n.rsplit(".", 1)[-1] not in FILE_SUFFIXES}
    return names


def code_name_problems(path: Path) -> list[str]:
    return sorted(f"{path.name}: {name} does not exist" for name in code_names(path)
                  if not resolves(name))


def current_docs() -> list[Path]:
    return [README, *sorted(DOCS.glob("*.md"))]


@pytest.mark.parametrize("page", current_docs(), ids=lambda p: p.name)
def test_quoted_modules_and_names_exist(page: Path) -> None:
    assert code_name_problems(page) == []


def test_code_name_check_finds_what_is_gone(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("`medpipe/data/prepare.py`, `medpipe/data/sources/`, `stages/train.py`,\n"
                    "`medpipe.data.prepare.prepare`, `medpipe.json`, tests/stages/x.py,\n"
                    "`medpipe/cpuconv.py`, `medpipe/sources/`, `medpipe.imageio`,\n"
                    "`medpipe.models.TARGET_LAYERS`, `stages/gone.py`.\n", encoding="utf-8")
    assert code_name_problems(page) == [
        f"page.md: {name} does not exist" for name in sorted(
            ["medpipe/cpuconv.py", "medpipe/sources/", "medpipe.imageio",
             "medpipe.models.TARGET_LAYERS", "stages/gone.py"])]
