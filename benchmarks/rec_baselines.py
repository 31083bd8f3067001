"""The recommendation baselines of `towerserve eval` on a data set, without a trained model.

    .venv/bin/python benchmarks/rec_baselines.py --data runs/gen_identity --out DIR

Runs the eval harness's own next-item task and baseline systems (popularity over the last 7
days, popularity over all time, item-kNN, EASE, ALS; towers/evaluation/systems.py) under the
time protocol with the cut the ``demo`` training preset uses (0.75 of the events' range),
2,000 users sampled with seed 7, exactly as ``towerserve eval --sections recommendation``
does for a model trained with ``--preset demo``; so its rows compare one to one with that
report's baseline rows. For when training the model is not possible in the time at hand.
``--teacher`` adds ``teacher_exact`` (the mean of the frozen teacher's vectors of the history
items: the text-only recommender that needs no training, about 4 minutes to embed 5,000
items on two busy cores).
Writes ``rec_baselines.json`` and ``rec_baselines.md`` under --out and prints the markdown.
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from towers.data import cut_ts_at, item_texts, load_dataset  # noqa: E402
from towers.evaluation.recommend import next_item_task, run_systems  # noqa: E402
from towers.evaluation.systems import events_range, recommendation_systems  # noqa: E402

BASELINES = ("popularity", "popularity_all", "item_knn", "rp3beta", "ease", "als")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, required=True, help="data set folder")
    ap.add_argument("--out", type=Path, required=True, help="folder for the results")
    ap.add_argument("--until-frac", type=float, default=0.75, help="training cut (demo: 0.75)")
    ap.add_argument("--max-users", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--teacher", action="store_true", help="add teacher_exact (text only)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    ds = load_dataset(args.data)
    item_ids = ds.items["item_id"].to_numpy(np.int64)
    cut = cut_ts_at(ds.events, args.until_frac)
    # The baselines read only the data set and item ids; the table is never searched by them.
    stand_in = SimpleNamespace(
        ds=ds,
        item_ids=item_ids,
        report={"config": {}},
        row_of={int(i): r for r, i in enumerate(item_ids)},
        table=np.zeros((len(item_ids), 8), dtype=np.float32),
        user_tower=None,
    )
    names = BASELINES
    if args.teacher:
        from towers.teacher import embed_texts, load_teacher

        stand_in.teacher_items = embed_texts(load_teacher(), item_texts(ds.items))
        names = (*BASELINES, "teacher_exact")
    systems = recommendation_systems(stand_in, names)  # type: ignore[arg-type]
    _, end = events_range(ds.events)
    task = next_item_task(ds.events, cut, end, max_users=args.max_users, seed=args.seed)
    res = run_systems(task, systems, len(item_ids))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "rec_baselines.json").write_text(json.dumps(res, indent=2, default=float) + "\n")
    lines = [
        f"`{shlex.join(['python', *sys.argv])}`: {len(task)} users, cut at {args.until_frac}",
        "",
        "| system | Recall@50 [95%] | Recall@10 | NDCG@10 | top-100 accuracy |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for name, r in res.items():
        lo, hi = r["ci95"]["recall@50"]  # type: ignore[index]
        lines.append(
            f"| {name} | {r['recall@50']:.3f} [{lo:.3f}, {hi:.3f}] | {r['recall@10']:.3f} | "
            f"{r['ndcg@10']:.3f} | {r['accuracy@100']:.3f} |"
        )
    md = "\n".join(lines) + "\n"
    (args.out / "rec_baselines.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
