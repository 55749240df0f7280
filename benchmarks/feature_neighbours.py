"""Do the model's pooled features rank patches better than its own classifier does?

The slide triage needs a tile model that ranks normal tissue below tumour better than the shipped
one (``benchmarks/slide_triage_needs.py``). Before training anything new, this asks whether the
pooled, rotation-invariant features the model already exports (its ``features`` output, what its
linear classifier reads) hold more than the classifier makes of them. Each patch of the two
halves of PCam ``valid`` votes with its ``K`` nearest training patches (cosine similarity of the
features, standardised by the training statistics): the share of tumour among them is a second,
non-parametric score. Printed per half: the classifier's AUC, the neighbours' AUC, and the AUC of
both together (the classifier's log-odds plus the neighbours' smoothed log-odds).

Run from the repository root (about a minute on 2 cores):
  python benchmarks/feature_neighbours.py [--model M] [--data ZIP] [--cache-dir DIR]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

K_VALUES = (10, 50, 200)
DEFAULT_ZIP = REPO.parent / "shared" / "data" / "pcam" / "pcam_train_valid.zip"


def unit_rows(
    features: NDArray[np.float32], mean: NDArray[np.float32], std: NDArray[np.float32]
) -> NDArray[np.float32]:
    """Features standardised by (``mean``, ``std``), each row scaled to length 1."""
    z = (features - mean) / std
    norms = np.linalg.norm(z, axis=1, keepdims=True)
    return np.asarray(z / np.maximum(norms, 1e-12), dtype=np.float32)


def neighbour_votes(
    query: NDArray[np.float32],
    reference: NDArray[np.float32],
    labels: NDArray[np.int64],
    k: int,
    chunk: int = 256,
) -> NDArray[np.float64]:
    """Share of label 1 among each query row's ``k`` most similar reference rows (unit rows: the
    dot product is the cosine similarity)."""
    out = np.empty(len(query), dtype=np.float64)
    for start in range(0, len(query), chunk):
        sims = query[start : start + chunk] @ reference.T
        nearest = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        out[start : start + chunk] = labels[nearest].mean(axis=1)
    return out


def log_odds(p: NDArray[np.float64]) -> NDArray[np.float64]:
    q = np.clip(p, 1e-6, 1 - 1e-6)
    return np.asarray(np.log(q / (1 - q)), dtype=np.float64)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, default=None, help="ONNX model with features (default: shipped)")
    p.add_argument("--data", type=Path, default=DEFAULT_ZIP, help="pcam_train_valid.zip")
    p.add_argument("--cache-dir", type=Path, default=REPO / "runs" / "cache")
    args = p.parse_args(argv)
    from benchmarks.triage_slides import say
    from engine.model import Model
    from engine.preprocess import prepare
    from training.data import load_patches
    from training.metrics import auc
    from training.splits import VALID_SPLIT_SEED
    from training.train import valid_halves

    model = Model.load(args.model, threads=2)
    if model.contract.features_name is None:
        say(f"{model.version}: exports no features")
        return 2
    data = load_patches(args.data, args.cache_dir)
    select, heldout = valid_halves(data["valid"], VALID_SPLIT_SEED)

    def infer(images: NDArray[np.uint8]) -> tuple[NDArray[np.float64], NDArray[np.float32]]:
        probs, feats = [], []
        for start in range(0, len(images), 256):
            pr, f = model.infer_prepared(prepare(np.asarray(images[start : start + 256]), model.contract))
            assert f is not None
            probs.append(pr)
            feats.append(f)
        return np.concatenate(probs).astype(np.float64), np.concatenate(feats)

    train_p, train_f = infer(data["train"].images)
    train_y = np.asarray(data["train"].labels, dtype=np.int64)
    mean, std = train_f.mean(axis=0), train_f.std(axis=0) + 1e-6
    reference = unit_rows(train_f, mean, std)
    say(f"# {model.version}: features {train_f.shape[1]}, training patches {len(train_y)}")
    say(f"# classifier AUC on its own training patches: {auc(train_y, train_p):.4f}")
    for name, half in (("selection", select), ("held-out", heldout)):
        y = np.asarray(half.labels, dtype=np.int64)
        probs, feats = infer(half.images)
        query = unit_rows(feats, mean, std)
        cells = [f"classifier {auc(y, probs):.4f}"]
        for k in K_VALUES:
            votes = neighbour_votes(query, reference, train_y, k)
            both = log_odds(probs) + log_odds((votes * k + 0.5) / (k + 1))
            cells.append(f"k={k}: neighbours {auc(y, votes):.4f}, both {auc(y, both):.4f}")
        say(f"{name:9s}  " + " | ".join(cells))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
