"""Data sources: each one fetches a dataset into a raw directory and reads it back.

A source is a module in this package with two functions:

- ``fetch(cfg: DataParams, out_dir: Path) -> None`` writes the raw dataset into
  ``out_dir`` (a fresh, empty directory), including ``dataset.json`` describing it;
- ``read(raw_dir: Path, meta: dict) -> RawDataset`` (:mod:`medpipe.data.raw`) loads it
  for the prepare stage.

Adding a source means adding one module and one line to ``registry.SOURCES``.
"""
