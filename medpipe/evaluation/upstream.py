"""What the evaluation report shows from earlier stages: the prepare stage's summary
(``metrics/prepare_detail.json``: images per split and class, patients, duplicates, skipped
files) and preview grid (``metrics/prepare_preview.png``), the dataset's description
(``data/raw/dataset.json``: its source) and the training curves DVCLive wrote
(``metrics/train/plots/metrics/<split>/<metric>.tsv``).

Each is optional: a path of None leaves its part out of the report. A path that is given
must exist and be readable, or the error names it.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path

from medpipe import PipelineError

# history[metric][split] = (epochs, values)
History = dict[str, dict[str, tuple[list[int], list[float]]]]


@dataclass(frozen=True)
class Upstream:
    prepare: dict | None = None
    dataset: dict | None = None
    preview: bytes | None = None
    history: History = field(default_factory=dict)


def read(prepare: Path | None = None, dataset: Path | None = None,
         preview: Path | None = None, live: Path | None = None) -> Upstream:
    """The files named (see the module docstring); None: that part is absent."""
    return Upstream(prepare=_json(prepare) if prepare else None,
                    dataset=_json(dataset) if dataset else None,
                    preview=_bytes(preview) if preview else None,
                    history=training_history(live) if live else {})


def _exists(path: Path, what: str) -> None:
    if not path.exists():
        raise PipelineError(f"{path}: not found; the evaluation report reads {what} from it "
                            "(stage evaluate)")


def _json(path: Path) -> dict:
    _exists(path, "the data's description")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise PipelineError(f"{path}: not readable as JSON ({e}) (stage evaluate)") from e


def _bytes(path: Path) -> bytes:
    _exists(path, "the preview of the training images")
    return path.read_bytes()


def training_history(live: Path) -> History:
    """The per-epoch curves of a DVCLive directory: every ``plots/metrics/<split>/<name>.tsv``
    (columns ``timestamp``, ``step`` and the value), as ``history[name][split]``."""
    _exists(live, "the training curves")
    out: History = {}
    root = live / "plots" / "metrics"
    for path in sorted(root.rglob("*.tsv")) if root.is_dir() else []:
        split = path.parent.relative_to(root).as_posix()
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f, delimiter="\t"))
        if not rows or "step" not in rows[0] or path.stem not in rows[0]:
            raise PipelineError(f"{path}: expected the columns step and {path.stem} "
                                "(a DVCLive metric file) (stage evaluate)")
        steps = [int(r["step"]) for r in rows]
        values = [float(r[path.stem]) for r in rows]
        out.setdefault(path.stem, {})[split] = (steps, values)
    return out
