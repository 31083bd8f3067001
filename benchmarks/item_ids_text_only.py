"""The same trained model with its item id vectors switched off (issue 9 item 4).

    .venv/bin/python benchmarks/item_ids_text_only.py --artifacts runs/ids --out runs/ids_text
    .venv/bin/towerserve eval --artifacts runs/ids_text --sections recommendation --out R

Copies the artifacts folder ``--artifacts`` (without its ``bundle/``) to ``--out`` and
replaces its item table (``item_embeddings.npy``) with every item's text-only vector, as if
no item had an interaction before the cut; the towers are unchanged. ``towerserve eval`` on
both folders then measures what the id vectors add over the text path of the same model (the
path new items take). A model trained without ids (``TrainConfig(item_ids=False)``) is the
other comparison.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from towers.bundle_contract import (  # noqa: E402
    ARTIFACTS_BUNDLE_DIR,
    ITEM_EMBEDDINGS_FILE,
    TRAIN_REPORT_FILE,
)

log = logging.getLogger("item_ids_text_only")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--artifacts", type=Path, required=True, help="trained artifacts folder")
    p.add_argument("--out", type=Path, required=True, help="new artifacts folder (replaced)")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    report_path = args.artifacts / TRAIN_REPORT_FILE
    if not report_path.is_file():
        p.error(f"{report_path} missing: --artifacts must be a `towerserve train` output folder")
    from towers.data import item_texts, load_dataset
    from towers.finetune import embed_items
    from towers.models import ItemTower, load_module
    from towers.teacher import tokenizer_path
    from towers.text import load_tokenizer

    report = json.loads(report_path.read_text())
    shutil.rmtree(args.out, ignore_errors=True)
    shutil.copytree(args.artifacts, args.out, ignore=shutil.ignore_patterns(ARTIFACTS_BUNDLE_DIR))
    tower = load_module("item_tower", args.artifacts / "item_tower")
    if not isinstance(tower, ItemTower):
        p.error(f"{args.artifacts / 'item_tower'} is not an item tower")
    items = load_dataset(Path(report["data_dir"])).items.reset_index(drop=True)
    bf16 = bool(report["config"].get("bf16", True))
    table = embed_items(tower, load_tokenizer(tokenizer_path()), item_texts(items), bf16=bf16)
    np.save(args.out / ITEM_EMBEDDINGS_FILE, table)
    log.info(
        "%s: %d items, text-only vectors (%d id vectors left out)",
        args.out,
        len(table),
        tower.n_ids,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
