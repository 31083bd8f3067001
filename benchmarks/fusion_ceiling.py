"""How far could fusing the towers (or ALS) with EASE go on a data set? An oracle bound (issue 9).

    .venv/bin/python benchmarks/fusion_ceiling.py --artifacts runs/hold/mli_time_ids \
        --data runs/ml_identity --out runs/fusion_identity

The served path for a request without a query ranks by ``cosine + w * covisit / max``
(towers/covisit.py), and on data where item identity decides the next item the fitted ``w``
is 1000: the co-visitation (truncated EASE) order, the towers breaking ties. Whether a better
fusion rule could make the towers pay is answered here *on the test window itself*: every
weight below is the best of its grid on the very users it is scored on, so each row is an
upper bound of what fitting the rule on validation could reach, not a result to report as the
model's.

On the eval harness's own time-protocol task (``towerserve eval --sections recommendation``:
the model's cut, its users, the same exclusions), ranks every catalog item by

- ``ease@l2``: EASE (towers/cooccurrence.py) at ridge ``l2`` (the eval's baseline is 500);
- ``ease@L, k positive neighbours``: each EASE row cut to its ``k`` largest positive
  weights, as the co-visitation table keeps them (100 at every ridge, 200 at 500);
- ``towers``: cosine of the model's user vector (its history, as evaluation embeds it) and
  every item vector (exact, no FAISS, no prior);
- ``served_twin``: the in-process twin of the served ranking (``student_faiss_covisit``);
- ``z(ease) + a z(towers)``, ``z(ease) + a z(als)``, ``z(ease) + a z(als) + b z(towers)``:
  each user's scores standardised over the catalog, then summed;
- ``rrf``: reciprocal-rank fusion ``1/(60 + rank_ease) + a/(60 + rank_towers)``;

and reports Recall@50 with each row's paired ratio to ``ease@500`` and its 95% bootstrap
interval (towers/evaluation/confidence.py). Writes ``fusion_ceiling.json`` and
``fusion_ceiling.md`` under ``--out`` and prints the markdown. Time: about 30 s for 1,500 users
and 5,000 items on two cores.
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

log = logging.getLogger("fusion_ceiling")

#: Weights of the second (and third) standardised score tried for each fusion.
FUSION_WEIGHTS = (0.05, 0.1, 0.2, 0.3, 0.5, 1.0)
#: Ridges of the EASE rows (the eval's baseline is 500).
EASE_L2 = (50.0, 100.0, 250.0, 500.0, 1000.0)
#: Neighbours per item of the truncated EASE rows (towers/covisit.py keeps 100 positive ones):
#: at every ridge the first, at 500 each.
TABLE_NEIGHBOURS = (100, 200)
#: Reciprocal-rank fusion's constant (Cormack et al. 2009).
RRF_K = 60


def standardised(scores: np.ndarray) -> np.ndarray:
    """Each row minus its mean over the catalog, over its standard deviation."""
    mu = scores.mean(axis=1, keepdims=True)
    sd = scores.std(axis=1, keepdims=True)
    return ((scores - mu) / np.maximum(sd, 1e-9)).astype(np.float32)


def ranks(scores: np.ndarray) -> np.ndarray:
    """0-based rank of every item in its row, best first."""
    return np.argsort(np.argsort(-scores, axis=1), axis=1).astype(np.float32)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--artifacts", type=Path, required=True, help="a `towerserve train` output")
    p.add_argument("--data", type=Path, required=True, help="the data set it was trained on")
    p.add_argument("--out", type=Path, required=True, help="folder for the JSON and markdown")
    p.add_argument("--max-users", type=int, default=2000, help="users sampled (eval's default)")
    p.add_argument("--seed", type=int, default=7, help="user sample's seed (eval's default)")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    if not (args.artifacts / "train_report.json").is_file():
        p.error(f"{args.artifacts} is not a `towerserve train` output (no train_report.json)")

    from towers.cooccurrence import EASE, interactions
    from towers.evaluation.collaborative import ALS, top_k_excluding
    from towers.evaluation.confidence import paired_ci
    from towers.evaluation.recommend import history_matrix, next_item_task, per_user_metrics
    from towers.evaluation.systems import events_range, load, recommendation_systems
    from towers.finetune import embed_histories

    started = time.perf_counter()
    m = load(args.artifacts, args.data)
    if m.cut_ts is None:
        p.error("the model was trained on all events: no held-out window to score")
    _, end = events_range(m.ds.events)
    task = next_item_task(m.ds.events, m.cut_ts, end, max_users=args.max_users, seed=args.seed)
    data = interactions(m.ds.events, m.item_ids, until_ts=task.start_ts)
    rows = data.user_rows(task.user_ids, task.hist_ids)
    log.info("%d users, %d items", len(task), len(m.item_ids))

    def ease_scores(l2: float) -> np.ndarray:
        model = EASE(data, l2=l2)
        for k in TABLE_NEIGHBOURS if l2 == 500.0 else TABLE_NEIGHBOURS[:1]:
            w = np.maximum(model.weights, 0.0)  # what the co-visitation table keeps of a row
            cut = min(k, w.shape[1])
            kth = -np.partition(-w, cut - 1, axis=1)[:, cut - 1 : cut]
            kept = np.zeros((rows.shape[0], model.n_items), np.float32)
            kept[:, model.active] = rows[:, model.active] @ np.where(w >= kth, w, 0.0)
            truncated[(l2, k)] = kept
        return model.scores(rows)

    truncated: dict[tuple[float, int], np.ndarray] = {}

    tau_s = float(m.report["config"].get("recency_tau_s", 2 * 86400.0))
    hist_rows, hist_weights = history_matrix(task, m.row_of, tau_s)
    users = embed_histories(m.user_tower, m.tok, hist_rows, hist_weights, m.table, bf16=m.bf16)
    towers = (users @ m.table.T).astype(np.float32)
    als = ALS(data).scores(rows)
    ease = {l2: ease_scores(l2) for l2 in EASE_L2}
    z_ease, z_towers, z_als = standardised(ease[500.0]), standardised(towers), standardised(als)

    rankings: dict[str, Callable[[], list[list[int]]]] = {}

    def top(scores: np.ndarray) -> Callable[[], list[list[int]]]:
        return lambda: top_k_excluding(scores, m.item_ids, task.excluded, 100)

    for l2, s in ease.items():
        rankings[f"ease@{l2:g}"] = top(s)
    for (l2, k), s in truncated.items():
        rankings[f"ease@{l2:g}, {k} positive neighbours"] = top(s)
    rankings["als"] = top(als)
    rankings["towers"] = top(towers)
    twin = recommendation_systems(m, ("student_faiss_covisit",)).get("student_faiss_covisit")
    if twin is not None:
        rankings["served_twin"] = lambda: twin(task, 100)
    for a in FUSION_WEIGHTS:
        rankings[f"z(ease) + {a:g} z(towers)"] = top(z_ease + a * z_towers)
        rankings[f"z(ease) + {a:g} z(als)"] = top(z_ease + a * z_als)
    for a in (0.2, 0.3, 0.5):
        for b in (0.1, 0.2, 0.3):
            rankings[f"z(ease) + {a:g} z(als) + {b:g} z(towers)"] = top(
                z_ease + a * z_als + b * z_towers
            )
    r_ease, r_towers = ranks(ease[500.0]), ranks(towers)
    for a in (0.1, 0.2, 0.5):
        rankings[f"rrf a={a:g}"] = top(1.0 / (RRF_K + r_ease) + a / (RRF_K + r_towers))

    recall = {name: per_user_metrics(rank(), task)["recall@50"] for name, rank in rankings.items()}
    base = recall["ease@500"]
    rows_out = []
    for name, values in recall.items():
        ratio, lo, hi = paired_ci(values, base, "ratio")
        rows_out.append(
            {"system": name, "recall@50": float(values.mean()), "vs_ease500": [ratio, lo, hi]}
        )
    families = {
        "towers": [r for r in rows_out if "towers" in r["system"] and "als" not in r["system"]],
        "als": [r for r in rows_out if "als" in r["system"] and "towers" not in r["system"]],
    }
    best = {
        fam: max(rs, key=lambda r: r["recall@50"])["system"] for fam, rs in families.items() if rs
    }
    doc = {
        "command": shlex.join(sys.argv),
        "artifacts": str(args.artifacts),
        "data": str(args.data),
        "n_users": len(task),
        "n_items": len(m.item_ids),
        "seconds": round(time.perf_counter() - started, 1),
        "rows": rows_out,
        "best_by_family": best,
        "note": "every weight is the best on the scored users: an upper bound, not a result",
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "fusion_ceiling.json").write_text(json.dumps(doc, indent=1))
    lines = [
        f"Oracle fusion bound, time protocol, {len(task)} users, {len(m.item_ids)} items "
        f"(`{doc['command']}`); weights chosen on the scored users themselves.",
        "",
        "| system | Recall@50 | / ease@500 [95%] |",
        "| --- | ---: | ---: |",
    ]
    for r in rows_out:
        ratio, lo, hi = r["vs_ease500"]
        lines.append(f"| {r['system']} | {r['recall@50']:.4f} | {ratio:.3f} [{lo:.3f}, {hi:.3f}] |")
    md = "\n".join(lines) + "\n"
    (args.out / "fusion_ceiling.md").write_text(md)
    sys.stdout.write(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
