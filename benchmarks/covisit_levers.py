"""What each co-visitation lever does on the held-out users (issue 9), one model, one run.

    .venv/bin/python benchmarks/covisit_levers.py --artifacts runs/tiny_refit --out runs/levers

On the time protocol's task (every user active after the training cut, as ``towerserve eval``
builds it) with the model's towers, FAISS index and prior, it measures Recall@50, top-100
accuracy and cold-item Recall@50 of:

- the served ranking (towers/covisit.py ``covisit_lists``) with the table's fitted settings,
  with the settings of the first version (newest 20 events, no decay, one weight, no cold
  share, the weight refitted by training), with each lever switched back one at a time, and
  with each other weight of ``COVISIT_WEIGHTS`` (what the test users would have chosen);
- the table alone (no towers) from each user's long history against full EASE scores of the
  same history (item 5 of the issue: what keeping 100 positive neighbours per item costs):
  full EASE, EASE without negative weights, and tables of 100, 300 and 1,000 neighbours.

These are test-set figures for understanding; the settings themselves are fitted on the
validation window before the cut (``towerserve train``, benchmarks/covisit_refit.py). Writes
``levers.json`` and ``levers.md`` under ``--out``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

log = logging.getLogger("covisit_levers")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--artifacts", type=Path, required=True, help="trained artifacts folder")
    p.add_argument("--out", type=Path, required=True, help="folder for levers.json / levers.md")
    p.add_argument("--max-users", type=int, default=None, help="sample of users (default all)")
    p.add_argument(
        "--first-weight",
        type=float,
        default=0.5,
        help="the weight the first version fitted (20 events; 0.5 on the tinydemo model)",
    )
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    import scipy.sparse as sp

    from towers.covisit import COVISIT_WEIGHTS, build_covisit, covisit_lists
    from towers.evaluation.collaborative import EASE, interactions, top_k_excluding
    from towers.evaluation.recommend import history_matrix, next_item_task
    from towers.evaluation.systems import events_range, load
    from towers.features import PRIOR_OVERFETCH, PriorLookup
    from towers.finetune import embed_histories
    from towers.metrics import recall_per_query

    m = load(args.artifacts)
    if m.covisit is None or m.cut_ts is None or m.prior is None:
        p.error(f"{args.artifacts} needs a co-visitation table, a prior and a training cut")
    table, cut = m.covisit, m.cut_ts
    events = m.ds.events
    _, end = events_range(events)
    task = next_item_task(events, cut, end, max_users=args.max_users, seed=7)
    seen = set(map(int, events.loc[events["ts"].to_numpy() < cut, "item_id"]))
    cold = set(map(int, m.item_ids)) - seen
    log.info("%d users, table %s", len(task), table.settings())
    tau_s = float(m.report["config"].get("recency_tau_s", 2 * 86400.0))
    rows, weights = history_matrix(task, m.row_of, tau_s)
    users = embed_histories(m.user_tower, m.tok, rows, weights, m.table, bf16=m.bf16)
    want = max(m.n_candidates, 100 + max(len(e) for e in task.excluded))
    pw = m.prior.weight
    lookup = PriorLookup(m.item_ids, m.prior.values, m.prior.default)
    cos, ids = m.index.search(users, PRIOR_OVERFETCH * want if pw > 0 else want)

    def measure(ranked: list[list[int]]) -> dict[str, float]:
        recall = recall_per_query(ranked, task.targets, 50)
        hits = sum(len(set(r[:100]) & t) for r, t in zip(ranked, task.targets))
        cold_t = [t & cold for t in task.targets]
        cold_r = recall_per_query(ranked, cold_t, 50)
        return {
            "recall@50": float(recall.mean()),
            "accuracy@100": hits / sum(len(t) for t in task.targets),
            "cold_recall@50": float(cold_r.mean()) if len(cold_r) else 0.0,
        }

    def served(t, histories) -> dict[str, float]:  # type: ignore[no-untyped-def]
        started = time.perf_counter()
        ranked = covisit_lists(
            cos, ids, t, histories, 100, task.excluded, depth=want, prior=lookup, prior_weight=pw
        )
        out = measure(ranked)
        out["seconds"] = round(time.perf_counter() - started, 2)
        return out

    w20 = args.first_weight
    results: dict[str, dict[str, float]] = {}
    results["towers + prior (weight 0)"] = served(table.with_weight(0.0), task.long_histories)
    results["fitted " + json.dumps(table.settings())] = served(table, task.long_histories)
    old = table.with_settings(weight=w20, history=20, decay=1.0, ramp=0, cold_share=0.0)
    results[f"first version (20 events, weight {w20:g})"] = served(old, task.hist_ids)
    for name, change in (
        ("history 20", {"history": 20}),
        ("no decay", {"decay": 1.0}),
        ("no ramp", {"ramp": 0}),
        ("no cold share", {"cold_share": 0.0}),
    ):
        results[f"fitted but {name}"] = served(table.with_settings(**change), task.long_histories)
    for w in COVISIT_WEIGHTS[1:]:  # what the test users would have chosen (validation chose one)
        if w != table.weight:
            results[f"fitted but weight {w:g}"] = served(table.with_weight(w), task.long_histories)

    # item 5: the table alone against full EASE, scored from the same long histories
    data = interactions(events, m.item_ids, until_ts=cut)
    col_of = {int(i): c for c, i in enumerate(m.item_ids)}
    r_idx, c_idx = [], []
    for u, hist in enumerate(task.long_histories):
        cols = sorted({col_of[int(i)] for i in hist if int(i) in col_of})
        r_idx += [u] * len(cols)
        c_idx += cols
    x = sp.csr_matrix(
        (np.ones(len(r_idx), np.float32), (r_idx, c_idx)), shape=(len(task), len(m.item_ids))
    )
    ease = EASE(data)
    for name, w in (("full EASE", ease.weights), ("EASE, negatives dropped", None)):
        w = np.maximum(ease.weights, 0) if w is None else w
        scores = np.zeros((len(task), len(m.item_ids)), np.float32)
        scores[:, ease.active] = np.asarray(x[:, ease.active] @ w)
        results[f"alone: {name}"] = measure(top_k_excluding(scores, m.item_ids, task.excluded, 100))
    for n in (100, 300, 1000):
        t = build_covisit(events, m.item_ids, until_ts=cut, kind=table.kind, n_neighbours=n)
        s = sp.csr_matrix(
            (t.weights, np.searchsorted(t.item_ids, t.neighbour_ids), t.indptr),
            shape=(len(t.item_ids), len(t.item_ids)),
        )
        order = np.searchsorted(t.item_ids, m.item_ids)
        scores = np.asarray((x[:, np.argsort(order)] @ s).todense())[:, order]
        results[f"alone: table of {n} neighbours (no max-normalisation)"] = measure(
            top_k_excluding(scores, m.item_ids, task.excluded, 100)
        )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "levers.json").write_text(json.dumps(results, indent=2))
    lines = [
        f"# Co-visitation levers, {args.artifacts}, {len(task)} users (time protocol)",
        "",
        "| system | Recall@50 | top-100 accuracy | cold Recall@50 |",
        "| --- | ---: | ---: | ---: |",
    ]
    for name, r in results.items():
        lines.append(
            f"| {name} | {r['recall@50']:.4f} | {r['accuracy@100']:.4f} | "
            f"{r['cold_recall@50']:.4f} |"
        )
    (args.out / "levers.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))  # noqa: T201 (a benchmark script's report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
