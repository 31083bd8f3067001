"""The reranker's blend for requests without a query (recommendations; issue 9 item 6).

The search blend (towers/train.py ``_fit_blend``) is fitted on labelled validation queries: a
search pair's cross-encoder logit against the retrieval cosine, popularity and BM25. A
request without a query is another task: its "query" is the titles of the user's two newest
items, and its retrieval score already holds what the retriever knows of the user (the
cosine, the trending prior and the co-visitation neighbours of the whole history). On data
where the next item does not follow from titles (real ratings, `data generate --structure
identity`), the search blend (or, with no labelled queries, the cross-encoder alone) reorders
a good collaborative list by title similarity and loses most of it.

So training fits a second blend on next-item contexts: the validation task of the
co-visitation fit (towers.covisit.validation_ranking: the newest days before the cut, or a
random share for a random-split model), ranked by the served retriever's own steps with the
table and prior of the events before it. For each user the top ``depth`` candidates are
cross-scored with the served context, and the blend ``retrieval + a * s * logit`` (``s`` the
spread of the retrieval scores over the logits', pooled within users) is chosen over
:data:`CE_WEIGHTS` by validation Recall@50; ``a = 0`` keeps the retrieval order, and is kept
unless the best weight beats it surely (the 95% paired bootstrap interval of the per-user
Recall@50 gain lies above 0: a few hundred users make gains of a user or two noise). It is
stored beside the search blend in ``blend.json`` (``no_query``); the served
reranker applies it to requests without a query.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np

from towers.bundle_contract import BLEND_FEATURES, Blend
from towers.covisit import CovisitTable, ValidationRanking
from towers.metrics import paired_gain, recall_per_query

log = logging.getLogger(__name__)

#: Cross-encoder weights tried, in units of the retrieval scores' spread per logit spread
#: (0: the retrieval order; the first of equal Recall@50 wins).
CE_WEIGHTS = (0.0, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0)
#: The cut-off validated (Recall@K), as the prior and co-visitation fits use.
VALIDATION_K = 50

#: ``logits(history_ids, candidate_ids)``: the cross-encoder logits float32 ``[n]`` of the
#: served context of a history (item ids, oldest first) against ``n`` candidate ids.
Logits = Callable[[np.ndarray, np.ndarray], np.ndarray]


def logit_scale(retrieval: list[np.ndarray], logits: list[np.ndarray]) -> float:
    """Spread of the retrieval scores over the logits', each centred within its user
    (standard deviations pooled over users); 1.0 when either is constant."""
    r = np.concatenate([x - x.mean() for x in retrieval if len(x)] or [np.zeros(1)])
    c = np.concatenate([x - x.mean() for x in logits if len(x)] or [np.zeros(1)])
    r_sd, c_sd = float(r.std()), float(c.std())
    return r_sd / c_sd if r_sd > 0 and c_sd > 0 else 1.0


def fit_no_query_blend(
    val: ValidationRanking,
    logits: Logits,
    covisit: CovisitTable | None = None,
    *,
    depth: int = 100,
) -> tuple[Blend, dict[str, float]]:
    """The blend for requests without a query, chosen on ``val`` (module docstring).

    ``covisit``: the trained table, whose fitted settings rank the validation (``None``: no
    co-visitation, as a model trained without it serves); ``logits`` the cross-encoder on the
    served context; ``depth`` the candidates cross-scored per user (the served reranker's
    ``max_k``). Returns the blend (weights on ``[rerank, retrieval, popularity, lexical]``)
    and the validation Recall@50 of each weight, keyed ``a=...``, plus ``scale`` and the best
    weight's paired gain over the retrieval order (``gain``, ``gain_lo``, ``gain_hi``).
    """
    table = val.table.fitted_like(covisit) if covisit is not None else val.table.with_weight(0.0)
    ranked = [(ids[:depth], scores[:depth]) for ids, scores in val.ranked(table)]
    ce = [
        logits(hist, ids) if len(ids) else np.zeros(0, np.float32)
        for hist, (ids, _) in zip(val.task.long_histories, ranked, strict=True)
    ]
    scale = logit_scale([s for _, s in ranked], ce)
    results: dict[str, float] = {"scale": scale}
    per_user: dict[float, np.ndarray] = {}
    for a in CE_WEIGHTS:
        lists = []
        for (ids, scores), c in zip(ranked, ce, strict=True):
            order = np.argsort(-(scores + a * scale * c), kind="stable")
            lists.append([int(i) for i in ids[order][:VALIDATION_K]])
        per_user[a] = recall_per_query(lists, val.task.targets, VALIDATION_K)
        results[f"a={a:g}"] = float(per_user[a].mean()) if len(per_user[a]) else 0.0
    best_a = max(CE_WEIGHTS, key=lambda a: results[f"a={a:g}"])  # ties: the first
    gain, lo, hi = paired_gain(per_user[best_a], per_user[0.0])
    results.update({"gain": gain, "gain_lo": lo, "gain_hi": hi})
    if best_a != 0.0 and not lo > 0:
        best_a = 0.0  # not surely better than the retrieval order
    best = results[f"a={best_a:g}"]
    weights = np.zeros(len(BLEND_FEATURES), np.float32)
    weights[BLEND_FEATURES.index("retrieval")] = 1.0
    weights[BLEND_FEATURES.index("rerank")] = best_a * scale
    log.info(
        "blend without a query: cross-encoder weight %g x %.3g (validation Recall@50 %.4f; "
        "retrieval order %.4f; best gain %.4f [%.4f, %.4f]) on %d users of %s",
        best_a,
        scale,
        best,
        results["a=0"],
        gain,
        lo,
        hi,
        len(val.task),
        val.label,
    )
    return Blend(weights, 0.0), results
