"""The ``external`` section of ``params.yaml``: test sets from other sites, by name, each a
mapping of ``data`` keys (read by the external stage, one DVC stage per set).

A set's name becomes a DVC stage (``external@<name>``), a params key that DVC looks up
with dots as separators (``external.<name>``), an argument in the stage's shell command
and two folders, so it must be letters, digits, ``_`` and ``-`` only, starting with a
letter or a digit: a space would split the command, a ``/`` would nest one set's outputs
inside another's, and a ``.`` would send DVC looking for a nested key.

A key the set leaves out takes the ``data`` section's value only where the set's own
source reads it, and reads it as the ``data`` section's source does (:data:`INHERITED`);
otherwise it takes its default (``null`` for the keys of other sources). ``url``, ``md5``
and ``sha256`` pin the training dataset's own file, ``class_folders`` names its own
folders and ``patient_pattern`` matches its own file names (an external set is never
split, so it needs no patient ids): they are never inherited. ``path`` is required.
"""

from __future__ import annotations

import re
from typing import Any

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")

# The keys of 'data' a set may take from the data section, by the set's source.
INHERITED: dict[str, tuple[str, ...]] = {
    "synthetic": ("seed", "resolution", "n_per_class", "classes"),
    "medmnist": ("name", "resolution", "classes"),
    "folder": ("classes",),
    "csv": ("name", "classes"),
}
# Keys every source reads alike (the label order), so they carry over from a data section
# of another source. The others mean something else to each source (name: a MedMNIST
# subset or a manifest file; resolution: a generated side or a MedMNIST file), and carry
# over from a data section of the same source only.
SHARED_MEANING = ("classes",)


def name_problem(name: Any) -> str | None:
    """What is wrong with ``name`` as an external set's name, or None."""
    if isinstance(name, str) and NAME.fullmatch(name):
        return None
    return (f"external set name {name!r} must be letters, digits, '_' or '-', starting with "
            "a letter or a digit (it names a DVC stage, a params key and two folders)")


def entry_values(data: dict[str, Any], entry: dict[str, Any],
                 defaults: dict[str, Any]) -> dict[str, Any]:
    """The ``data`` keys of a set: ``entry``'s own, then the data section's values of the
    keys :data:`INHERITED` allows, then ``defaults``."""
    source = entry.get("source", data.get("source"))
    same = source == data.get("source")
    keep = [k for k in INHERITED.get(source, ())
            if k in INHERITED.get(data.get("source"), ()) and (same or k in SHARED_MEANING)]
    return {**defaults, "source": source, **{k: data[k] for k in keep if k in data},
            **entry}
