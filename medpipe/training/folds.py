"""The fold models of cross-validation in their folder: their files, which are current,
and their validation figures. Nothing here imports torch until a fold model is read."""

from __future__ import annotations

from pathlib import Path

FIGURES = ("val_auc", "val_accuracy", "val_loss")


def fold_path(models_dir: Path, k: int) -> Path:
    return models_dir / f"fold_{k}.pt"


def remove_stale(models_dir: Path, k_folds: int) -> None:
    """Remove the files of folds an earlier, larger K left (and anything else fold_*)."""
    for stale in models_dir.glob("fold_*"):
        if fold_number(stale) is None or fold_number(stale) >= k_folds:
            stale.unlink()


def fold_number(path: Path) -> int | None:
    stem = path.name.removeprefix("fold_").split(".")[0]
    return int(stem) if stem.isdigit() else None


def is_current(path: Path, fingerprint: str) -> bool:
    if not path.exists():
        return False
    from medpipe.models import checkpoint

    ckpt = checkpoint.safe_load(path, "cpu", "a fold model this pipeline wrote")
    return isinstance(ckpt, dict) and ckpt.get("info", {}).get("fingerprint") == fingerprint


def summarise(models_dir: Path, k_folds: int) -> dict:
    """Each fold's best epoch and validation figures, and their mean and sd."""
    per_fold: list[dict] = []
    if not any(fold_path(models_dir, k).exists() for k in range(k_folds)):
        return {"folds": k_folds, "trained": 0, "per_fold": per_fold}
    import numpy as np

    from medpipe.models import checkpoint

    for k in range(k_folds):
        path = fold_path(models_dir, k)
        if not path.exists():
            continue
        info = checkpoint.safe_load(path, "cpu", "a fold model this pipeline wrote")["info"]
        per_fold.append({"fold": k, "best_epoch": info["best_epoch"],
                         **{f: round(info["best"][f], 6) for f in FIGURES if f in info["best"]},
                         "train_seconds": info.get("train_seconds")})
    out: dict = {"folds": k_folds, "trained": len(per_fold), "per_fold": per_fold}
    if per_fold:
        figures = {f: np.array([p[f] for p in per_fold]) for f in FIGURES if f in per_fold[0]}
        out["mean"] = {f: round(float(v.mean()), 6) for f, v in figures.items()}
        out["sd"] = {f: round(float(v.std(ddof=1)) if len(v) > 1 else 0.0, 6)
                     for f, v in figures.items()}
    return out


def headline(summary: dict) -> dict[str, float]:
    """What ``metrics/crossval.json`` keeps of :func:`summarise`'s summary (the rest, each
    fold's figures and time, goes to its detail file): the folds asked for and trained,
    and the mean and sd of each validation figure (``val_auc_mean``, ``val_auc_sd``, ...)."""
    out = {"folds": summary["folds"], "trained": summary["trained"]}
    for figure in summary.get("mean", {}):
        for stat in ("mean", "sd"):
            out[f"{figure}_{stat}"] = summary[stat][figure]
    return out
