"""Refit a trained model's co-visitation table with the current code (issue 9).

    .venv/bin/python benchmarks/covisit_refit.py --artifacts runs/tiny --out runs/tiny_refit
    .venv/bin/towerserve eval --artifacts runs/tiny_refit --sections recommendation --out R

Copies the artifacts folder ``--artifacts`` (of its ``bundle/`` only the exported FAISS index
and manifest, which ``towerserve eval`` ranks with) to ``--out`` and fits
its co-visitation table again exactly as ``towerserve train`` does at the end of training
(towers/train.py ``fit_tower_covisit``: the table of the events before the cut, its weight,
history length, decay, per-length ramp and cold share fitted on the validation window with the
trained towers and prior); the towers, prior and reranker are unchanged. So the table can be
iterated on without retraining the towers (minutes to hours on two cores). The train report's
``covisit`` entry and ``seconds.covisit`` are replaced. ``--refit-prior`` first fits the
popularity prior again too (towers/train.py ``fit_tower_prior``, with the validation training
would use now: a random share of the events for a random-split model), replacing the prior
files and the report's ``prior`` entry, and fits the table with it.

The fits rank with the artifacts' final towers. A model whose fits ranked with holdout towers
(train report ``fit_towers.kind`` ``holdout``: the default with ``--item-ids``) cannot be
refitted faithfully here (its holdout towers are not kept, and its final towers memorised the
validation window: a refit of such a model chose item-kNN at weight 0.3 and ranked 0.899 of
EASE on the test weeks where training's fit gave 0.978); the script refuses it unless
``--allow-final-towers`` says that is the point.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from towers.bundle_contract import (  # noqa: E402
    ARTIFACTS_BUNDLE_DIR,
    COVISIT_FILE,
    INDEX_FILE,
    ITEM_EMBEDDINGS_FILE,
    MANIFEST_FILE,
    TRAIN_REPORT_FILE,
)

log = logging.getLogger("covisit_refit")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--artifacts", type=Path, required=True, help="trained artifacts folder")
    p.add_argument("--out", type=Path, required=True, help="new artifacts folder (replaced)")
    p.add_argument(
        "--validation-days",
        type=float,
        default=None,
        help="days before the cut the settings are fitted on (default: training's)",
    )
    p.add_argument(
        "--refit-prior",
        action="store_true",
        help="fit the popularity prior again first (as training does now), then the table",
    )
    p.add_argument(
        "--allow-final-towers",
        action="store_true",
        help="refit a model whose fits ranked with holdout towers using its final towers",
    )
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    report_path = args.artifacts / TRAIN_REPORT_FILE
    if not report_path.is_file():
        p.error(f"{report_path} missing: --artifacts must be a `towerserve train` output folder")
    if args.out.resolve() == args.artifacts.resolve():
        p.error("--out must differ from --artifacts (the folder is replaced)")
    from towers.config import TrainConfig
    from towers.data import load_dataset
    from towers.metrics import fit_metric
    from towers.models import load_module
    from towers.prior import load_prior, save_prior
    from towers.teacher import tokenizer_path
    from towers.text import load_tokenizer
    from towers.train import covisit_validation_kind, fit_tower_covisit, fit_tower_prior

    report = json.loads(report_path.read_text())
    fit_towers = (report.get("fit_towers") or {}).get("kind")
    if fit_towers == "holdout" and not args.allow_final_towers:
        p.error(
            f"{args.artifacts}'s fits ranked with holdout towers, which are not kept: a refit "
            "would rank with the final towers, which saw the validation window; retrain, or "
            "pass --allow-final-towers"
        )
    cfg = TrainConfig(**report["config"])
    ds = load_dataset(Path(report["data_dir"]))
    until = report.get("events_until_ts")
    if until is None and covisit_validation_kind(ds, None) == "time":
        p.error(f"{args.artifacts} was trained on every event: no cut to fit the table before")
    # a model of a random split (trained on every event) is fitted as of the newest event
    at_ts = int(until) if until is not None else int(ds.events["ts"].max()) + 1
    item_ids = ds.items.reset_index(drop=True)["item_id"].to_numpy(np.int64)
    prior = load_prior(args.artifacts)
    if prior is None:
        p.error(f"{args.artifacts} has no popularity prior (trained before it existed)")
    shutil.rmtree(args.out, ignore_errors=True)
    shutil.copytree(args.artifacts, args.out, ignore=shutil.ignore_patterns(ARTIFACTS_BUNDLE_DIR))
    bundle = args.artifacts / ARTIFACTS_BUNDLE_DIR
    if (bundle / MANIFEST_FILE).is_file() and (bundle / INDEX_FILE).is_file():
        (args.out / ARTIFACTS_BUNDLE_DIR).mkdir()
        for name in (MANIFEST_FILE, INDEX_FILE):
            shutil.copy2(bundle / name, args.out / ARTIFACTS_BUNDLE_DIR / name)
    user_tower = load_module("user_tower", args.artifacts / "user_tower")
    tok = load_tokenizer(tokenizer_path())
    item_vecs = np.load(args.artifacts / ITEM_EMBEDDINGS_FILE)
    validation_kind = covisit_validation_kind(ds, report["events_until_ts"])
    if args.refit_prior:
        prior, prior_validation = fit_tower_prior(
            ds.events, item_ids, at_ts, user_tower, tok, item_vecs, cfg, validation_kind
        )
        save_prior(prior, args.out)
        report["prior"] = {
            **prior.meta(),
            "validation_metric": fit_metric(validation_kind).name,
            "validation_scores": prior_validation,
        }
        log.info("prior refitted on %s validation: %s", validation_kind, prior.meta())
    start = time.perf_counter()
    table, validation = fit_tower_covisit(
        ds.events,
        item_ids,
        at_ts,
        user_tower,  # type: ignore[arg-type]
        tok,
        item_vecs,
        prior,
        cfg,
        None if args.validation_days is None else args.validation_days * 86_400,
        validation=validation_kind,
    )
    seconds = round(time.perf_counter() - start, 2)
    table.save(args.out / COVISIT_FILE)
    report["covisit"] = {
        "kind": table.kind,
        **table.params(),
        **table.settings(),
        "entries": len(table),
        "validation": validation_kind,
        "validation_metric": fit_metric(validation_kind).name,
        "validation_scores": validation,
    }
    report.setdefault("seconds", {})["covisit"] = seconds
    (args.out / TRAIN_REPORT_FILE).write_text(json.dumps(report, indent=2))
    log.info("refitted in %.1f s: %s -> %s", seconds, table.settings(), args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
