"""A data set split at random for the random 80/20 evaluation protocol.

``towerserve data split`` writes a copy of a data set whose events are the training share and,
beside it, ``heldout_events.parquet`` with the held-out share; ``meta.json`` records the split
(``meta["split"]``). Training on the copy with ``--all-events`` and evaluating with
``towerserve eval --protocol random`` then measures what the TensorFlow Recommenders retrieval
tutorial measures (every held-out event a positive, a user's training items excluded from
their list), so figures compare with published ones. The default protocol, a time split,
is the one that says how a model does on the future; the two are never mixed in one figure.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import pandas as pd

from towers.data.dataset import Dataset, random_split
from towers.data.loader import DataError, load_dataset, save_dataset

log = logging.getLogger(__name__)

__all__ = ["HELDOUT_EVENTS_FILE", "heldout_events", "split_info", "write_random_split"]

#: The held-out events of a randomly split data set, beside its tables.
HELDOUT_EVENTS_FILE = "heldout_events.parquet"


def write_random_split(
    src: Path, out: Path, *, test_frac: float = 0.2, seed: int = 7
) -> dict[str, object]:
    """Split ``src``'s events at random (:func:`towers.data.dataset.random_split`) and write
    the training copy and the held-out events to ``out``; returns the split record (also in
    ``out/meta.json`` as ``split``).

    Raises:
        DataError: ``src`` is not a data set, or has no events.
        ValueError: ``test_frac`` is not strictly between 0 and 1, or ``out`` is ``src``.
    """
    src, out = Path(src), Path(out)
    if out.resolve() == src.resolve():
        raise ValueError(f"--out must differ from the data set {src}: the split is a copy")
    ds = load_dataset(src)
    if len(ds.events) == 0:
        raise DataError(f"{src}: no events to split")
    train, test = random_split(ds.events, test_frac, seed)
    record: dict[str, object] = {
        "protocol": "random",
        "test_frac": test_frac,
        "seed": seed,
        "source": str(src),
        "n_train_events": len(train),
        "n_heldout_events": len(test),
        "heldout_events": HELDOUT_EVENTS_FILE,
    }
    out.mkdir(parents=True, exist_ok=True)
    save_dataset(replace(ds, events=train, meta={**ds.meta, "split": record}), out)
    tmp = out / f".{HELDOUT_EVENTS_FILE}.tmp"
    test.to_parquet(tmp, index=False)
    tmp.replace(out / HELDOUT_EVENTS_FILE)
    log.info("split %s: %d training and %d held-out events -> %s", src, len(train), len(test), out)
    return record


def split_info(ds: Dataset) -> dict[str, object] | None:
    """The random split record of a data set written by :func:`write_random_split`, or None."""
    info = ds.meta.get("split") if isinstance(ds.meta, dict) else None
    return info if isinstance(info, dict) and info.get("protocol") == "random" else None


def heldout_events(root: Path) -> pd.DataFrame:
    """The held-out events of the randomly split data set in ``root``.

    Raises:
        DataError: ``root`` holds no ``heldout_events.parquet`` (not written by
            ``towerserve data split``).
    """
    path = Path(root) / HELDOUT_EVENTS_FILE
    if not path.is_file():
        raise DataError(
            f"{path} not found: the random protocol needs a data set written by "
            "`towerserve data split` (and a model trained on it with --all-events)"
        )
    return pd.read_parquet(path)
