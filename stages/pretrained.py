"""Stage pretrained: the ImageNet weights file that ``train.model`` starts from.

Reads ``params.yaml`` keys ``train.model`` and ``train.pretrained`` (only those: another
learning rate does not fetch the weights again); writes ``models/pretrained/``, a DVC
output holding the torchvision weights file and ``imagenet.json`` (file name, URL,
SHA-256), or only ``imagenet.json`` when ``train.pretrained`` is false. A teammate gets the
file with ``dvc pull``; offline, the error names the file to provide (see
``medpipe.models.imagenet``).

    python -m stages.pretrained --out models/pretrained
"""

from __future__ import annotations

from pathlib import Path

from medpipe.models import imagenet
from medpipe.params.loading import load_section
from medpipe.params.sections import TrainParams
from medpipe.utils import cli


def pretrained(cfg: TrainParams, out_dir: Path) -> dict:
    wf = imagenet.weights_file(cfg.model) if cfg.pretrained else None
    return imagenet.fetch(wf, out_dir)


def main(args) -> None:
    pretrained(load_section(args.params, "train", stage="pretrained"), Path(args.out))


def get_args_parser():
    p = cli.parser(__doc__.splitlines()[0])
    p.add_argument("--out", default="models/pretrained", help="weights directory")
    return p


if __name__ == "__main__":
    cli.run("pretrained", main, get_args_parser())
