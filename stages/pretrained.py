"""Stage pretrained: the ImageNet weights file that ``train.model`` starts from.

Reads ``params.yaml`` keys ``train.model`` and ``train.pretrained`` (only those: another
learning rate does not fetch the weights again); writes ``models/pretrained/``, a DVC
output holding the torchvision weights file and ``weights.json`` (file name, URL,
SHA-256), or only ``weights.json`` when ``train.pretrained`` is false. A teammate gets the
file with ``dvc pull``; offline, the error names the file to provide (see
``medpipe.weights``).

    python -m stages.pretrained --out models/pretrained
"""

from __future__ import annotations

from pathlib import Path

from medpipe import cli, weights
from medpipe.params import TrainParams, load_section


def pretrained(cfg: TrainParams, out_dir: Path) -> dict:
    wf = weights.weights_file(cfg.model) if cfg.pretrained else None
    return weights.fetch(wf, out_dir)


def main(args) -> None:
    pretrained(load_section(args.params, "train", stage="pretrained"), Path(args.out))


def get_args_parser():
    p = cli.parser(__doc__.splitlines()[0])
    p.add_argument("--out", default="models/pretrained", help="weights directory")
    return p


if __name__ == "__main__":
    cli.run("pretrained", main, get_args_parser())
