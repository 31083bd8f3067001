"""How the reranker's blend is fitted, side by side: least squares (today) against fits that
rank.

    python benchmarks/blend_fit.py --artifacts runs/demo/artifacts --out runs/blend_fit

The blend (``towers.bundle_contract.Blend``) is a linear score over the features
``rerank, retrieval, popularity, lexical``; training fits it by least squares on the grades
of validation queries' top-50 exact-search candidates (``towers/train.py``). Least squares
predicts grades; it does not rank. This script builds the features once, exactly as
evaluation and serving build them (``towers.evaluation.systems.BlendScorer``), for the
validation queries and for the held-out test queries (their FAISS top ``n_candidates``, as
the served reranker sees them with every candidate scored), then fits on validation only:

- ``least_squares_50``: today's fit (validation top 50; should equal the trained blend);
- ``least_squares_all``: the same on every candidate the reranker sees;
- ``pairwise``: linear pairwise logistic regression (RankNet) on feature differences of the
  validation pairs with different grades, per query weighted equally;
- ``ndcg_search``: coordinate search of the weights (features scaled to unit spread, the
  reranker's weight fixed to 1) maximising validation NDCG@10 directly;
- ``rerank_only``: the cross-encoder's logit alone; ``retrieval``: no reranking.

Reports test NDCG@10 of each with its 95% bootstrap interval, and the paired gain over
retrieval alone and over today's fit (``towers.evaluation.confidence.paired_ci``). Writes
``results.json`` (with each test query's NDCG@10, for paired comparisons across models)
and ``results.md`` under ``--out``. No timing is involved.
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from towers.metrics import ndcg_per_query

if TYPE_CHECKING:
    from towers.evaluation.systems import Loaded

log = logging.getLogger("blend_fit")


def _ndcg10(scores: np.ndarray, grades: np.ndarray, ideal: float) -> float:
    """NDCG@10 (gain ``2**grade - 1``) of one query's candidates ordered by ``scores``;
    ``ideal`` is the query's ideal DCG@10 over all its judged items (not only retrieved).
    The coordinate search's objective only, on arrays (it is called tens of thousands of
    times); every reported figure uses ``towers.metrics.ndcg_per_query``."""
    order = np.argsort(-scores, kind="stable")[:10]
    gains = 2.0 ** grades[order] - 1.0
    return float((gains / np.log2(np.arange(2, len(order) + 2))).sum() / ideal)


def _ideal(labels: dict[int, int]) -> float:
    best = sorted((g for g in labels.values() if g > 0), reverse=True)[:10]
    return float(((2.0 ** np.array(best) - 1.0) / np.log2(np.arange(2, len(best) + 2))).sum())


def least_squares(feats: list[np.ndarray], grades: list[np.ndarray], top: int | None) -> np.ndarray:
    """Weights (with the bias last) of the least-squares fit of grades on features."""
    x = np.concatenate([f[:top] for f in feats]).astype(np.float64)
    y = np.concatenate([g[:top] for g in grades]).astype(np.float64)
    x = np.concatenate([x, np.ones((len(x), 1))], axis=1)
    coef, *_ = np.linalg.lstsq(x, y, rcond=None)
    return coef


def pairwise(feats: list[np.ndarray], grades: list[np.ndarray], l2: float = 1e-3) -> np.ndarray:
    """RankNet-style linear fit: logistic loss on ``w . (x_i - x_j)`` for every validation
    pair with ``grade_i > grade_j``, each query's pairs weighted to sum to one."""
    import torch

    diffs, weights = [], []
    for f, g in zip(feats, grades):
        hi, lo = np.nonzero(g[:, None] > g[None, :])
        if not len(hi):
            continue
        diffs.append(f[hi] - f[lo])
        weights.append(np.full(len(hi), 1.0 / len(hi)))
    d = torch.from_numpy(np.concatenate(diffs).astype(np.float32))
    wq = torch.from_numpy(np.concatenate(weights).astype(np.float32))
    scale = d.std(0).clamp(min=1e-6)
    w = torch.zeros(d.shape[1], requires_grad=True)
    opt = torch.optim.LBFGS([w], max_iter=500, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        z = (d / scale) @ w
        loss = (wq * torch.nn.functional.softplus(-z)).sum() / wq.sum() + l2 * (w**2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    coef = (w.detach() / scale).numpy().astype(np.float64)
    return np.concatenate([coef, [0.0]])


def ndcg_search(
    feats: list[np.ndarray], grades: list[np.ndarray], ideals: Sequence[float], rounds: int = 4
) -> np.ndarray:
    """Coordinate search over the non-reranker weights (reranker weight 1, features scaled
    to unit standard deviation) maximising mean validation NDCG@10."""
    spread = np.concatenate(feats).std(0)
    spread[spread == 0] = 1.0
    scaled = [f / spread for f in feats]
    w = np.zeros(feats[0].shape[1])
    w[0] = 1.0
    grid = np.concatenate([[0.0], np.geomspace(0.01, 4.0, 25), -np.geomspace(0.01, 4.0, 25)])

    def value(weights: np.ndarray) -> float:
        return float(
            np.mean([_ndcg10(f @ weights, g, i) for f, g, i in zip(scaled, grades, ideals)])
        )

    best = value(w)
    for _ in range(rounds):
        changed = False
        for j in range(1, len(w)):
            for v in grid:
                trial = w.copy()
                trial[j] = v
                got = value(trial)
                if got > best + 1e-9:
                    best, w, changed = got, trial, True
        if not changed:
            break
    log.info("ndcg_search: validation NDCG@10 %.4f", best)
    return np.concatenate([w / spread, [0.0]])


@dataclass
class Split:
    """One split's queries, each with its FAISS candidates: blend features float32
    ``[n_candidates, 4]``, the candidates' grades and ids, the query's judgments and ideal
    DCG@10."""

    feats: list[np.ndarray]
    grades: list[np.ndarray]
    ids: list[np.ndarray]
    labels: list[dict[int, int]]
    ideals: list[float]

    def ndcg(self, weights: np.ndarray) -> np.ndarray:
        """Each query's NDCG@10 with candidates ordered by ``feats @ weights`` (bias last,
        ignored), by the project's metric (``towers.metrics.ndcg_per_query``)."""
        ranked = [
            i[np.argsort(-(f @ weights[:-1]), kind="stable")].tolist()
            for f, i in zip(self.feats, self.ids)
        ]
        return ndcg_per_query(ranked, self.labels, 10)


def build(m: Loaded, split: str) -> Split:
    """The features, grades and judgments of one split's queries (see :class:`Split`)."""
    from towers.bundle_contract import blend_features
    from towers.evaluation.systems import BlendScorer
    from towers.examples import graded_labels
    from towers.finetune import embed_queries
    from towers.progress import progress
    from towers.rerank_train import score_candidates
    from towers.text import query_token_list

    scorer = BlendScorer(m)
    _, texts, labels = graded_labels(m.ds.queries, m.ds.qrels, split)
    feats, grades, ids_of, ideals = [], [], [], []
    row_of = m.row_of
    for text, lab in progress(list(zip(texts, labels)), f"features ({split})"):
        vec = embed_queries(m.user_tower, m.tok, [text], bf16=m.bf16)
        scores, ids = m.index.search(vec, m.n_candidates)
        keep = ids[0] >= 0
        ids, scores = ids[0][keep], scores[0][keep]
        rows = np.array([row_of[int(i)] for i in ids], dtype=np.int64)
        ce = score_candidates(
            scorer.reranker,
            query_token_list(m.tok, text),
            [scorer.tokens[r] for r in rows],
            bf16=m.bf16,
        )
        lexical = scorer.lexical.scores(text, rows) if scorer.lexical is not None else None
        feats.append(blend_features(ce, scores, scorer.popularity[rows], lexical))
        grades.append(np.array([lab.get(int(i), 0) for i in ids], dtype=np.float64))
        ids_of.append(ids)
        ideals.append(_ideal(lab))
    return Split(feats, grades, ids_of, labels, ideals)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--artifacts", type=Path, required=True, help="towerserve train output")
    parser.add_argument("--out", type=Path, required=True, help="folder for results.json/.md")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")

    from towers.evaluation.confidence import bootstrap_ci, paired_ci
    from towers.evaluation.systems import load

    m = load(args.artifacts)
    if m.reranker is None:
        raise SystemExit(f"{args.artifacts} has no reranker")
    valid_split, test_split = build(m, "valid"), build(m, "test")
    v_feats, v_grades, t_feats = valid_split.feats, valid_split.grades, test_split.feats
    fits: dict[str, np.ndarray] = {
        "trained": np.concatenate([m.blend.weights, [m.blend.bias]]).astype(np.float64),
        "least_squares_50": least_squares(v_feats, v_grades, 50),
        "least_squares_all": least_squares(v_feats, v_grades, None),
        "pairwise": pairwise(v_feats, v_grades),
        "ndcg_search": ndcg_search(v_feats, v_grades, valid_split.ideals),
        "rerank_only": np.array([1.0, 0.0, 0.0, 0.0, 0.0]),
        "retrieval": np.array([0.0, 1.0, 0.0, 0.0, 0.0]),
    }
    per_query = {name: test_split.ndcg(w) for name, w in fits.items()}
    # the search's array objective must be the reported metric (ties aside)
    objective = [
        _ndcg10(f @ fits["trained"][:-1], g, i)
        for f, g, i in zip(t_feats, test_split.grades, test_split.ideals)
    ]
    if abs(float(np.mean(objective)) - float(per_query["trained"].mean())) > 1e-6:
        raise SystemExit("the coordinate search's NDCG@10 differs from towers.metrics'")
    valid = {name: float(valid_split.ndcg(w).mean()) for name, w in fits.items()}
    rows = []
    for name, w in fits.items():
        lo, hi = bootstrap_ci(per_query[name])
        value = float(per_query[name].mean())
        g_ret = paired_ci(per_query[name], per_query["retrieval"], "diff")
        g_ls = paired_ci(per_query[name], per_query["trained"], "diff")
        rows.append(
            {
                "blend": name,
                "weights": [float(x) for x in w],
                "valid_ndcg@10": valid[name],
                "test_ndcg@10": [value, lo, hi],
                "gain_over_retrieval": list(g_ret),
                "gain_over_trained": list(g_ls),
                "test_ndcg@10_per_query": per_query[name].round(6).tolist(),
            }
        )
    result = {
        "artifacts": str(args.artifacts),
        "n_valid": len(v_feats),
        "n_test": len(t_feats),
        "n_candidates": int(m.n_candidates),
        "rows": rows,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(result, indent=2))
    lines = [
        f"# Blend fits: {args.artifacts}",
        "",
        f"{len(v_feats)} validation queries fit, {len(t_feats)} test queries measure; "
        f"every one of the FAISS top {m.n_candidates} candidates scored.",
        "",
        "| blend | valid NDCG@10 | test NDCG@10 [95%] | gain over retrieval [95%] "
        "| gain over trained [95%] |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        t, g, d = r["test_ndcg@10"], r["gain_over_retrieval"], r["gain_over_trained"]
        lines.append(
            f"| {r['blend']} | {r['valid_ndcg@10']:.4f} | {t[0]:.4f} [{t[1]:.4f}, {t[2]:.4f}] "
            f"| {g[0]:+.4f} [{g[1]:+.4f}, {g[2]:+.4f}] | {d[0]:+.4f} [{d[1]:+.4f}, {d[2]:+.4f}] |"
        )
    (args.out / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return result


if __name__ == "__main__":
    main()
