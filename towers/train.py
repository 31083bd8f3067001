"""``towerserve train``: distil, fine-tune and rerank-train, then save the artifacts.

Artifacts folder layout (all generated, git-ignored):

- ``item_tower/``, ``user_tower/``, ``reranker/``: ``model.safetensors`` + ``config.json``
- ``blend.json``: the learned combination of reranker, retrieval, popularity and lexical scores
- ``teacher_item_embeddings.npy``: the teacher's item vectors (for evaluation)
- ``item_embeddings.npy``: the item tower's vectors in items-table row order, each item's id
  vector included where it has one (an incremental update that keeps the item tower reuses
  them)
- ``train_report.json``: settings, losses and the seconds each stage took
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import faiss
import numpy as np
import pandas as pd
import torch
from tokenizers import Tokenizer
from transformers import BertModel

from towers.bundle_contract import (
    COVISIT_FILE,
    ITEM_EMBEDDINGS_FILE,
    TEACHER_ITEM_EMBEDDINGS_FILE,
    TRAIN_REPORT_FILE,
    Blend,
    blend_features,
)
from towers.config import TrainConfig
from towers.covisit import EASE_L2S, CovisitTable, fit_model_covisit, validation_ranking
from towers.data import Dataset, cut_ts_at, load_dataset
from towers.data import item_texts as make_item_texts
from towers.distil import distil_student, pca_projection
from towers.encoder import TextEncoder, make_student
from towers.examples import (
    HistoryPairs,
    QueryPositives,
    graded_labels,
    history_pairs,
    item_popularity,
    positions,
    query_positives,
)
from towers.features import CONTEXT_ITEMS, padded_recency_weights
from towers.finetune import (
    embed_histories,
    embed_items,
    embed_queries,
    finetune_ids,
    finetune_towers,
    target_log_q,
)
from towers.history_fit import fit_user_history
from towers.lexical import LexicalIndex
from towers.metrics import fit_metric
from towers.models import CrossEncoder, ItemTower, UserTower, save_module
from towers.next_item import NextItemTask, history_matrix
from towers.no_query_blend import fit_no_query_blend
from towers.prior import VALIDATION_S, ItemPrior, fit_model_prior, save_prior
from towers.rerank_train import (
    fit_blend,
    history_contexts,
    score_candidates,
    train_cross_encoder,
    training_pairs,
)
from towers.teacher import embed_texts, load_teacher, tokenizer_path
from towers.text import item_token_lists, load_tokenizer, query_token_list

log = logging.getLogger(__name__)


@dataclass
class StageTimer:
    """Seconds spent per named stage."""

    seconds: dict[str, float] = field(default_factory=dict)

    def run(self, name: str, fn, *args, **kwargs):  # type: ignore[no-untyped-def]
        log.info("stage %s ...", name)
        start = time.perf_counter()
        out = fn(*args, **kwargs)
        self.seconds[name] = round(time.perf_counter() - start, 2)
        log.info("stage %s done in %.1f s", name, self.seconds[name])
        return out


def exact_top_k(queries: np.ndarray, items: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact inner-product top-k: scores and row positions, each ``[n_queries, k]``."""
    index = faiss.IndexFlatIP(items.shape[1])
    index.add(np.ascontiguousarray(items, dtype=np.float32))
    return index.search(np.ascontiguousarray(queries, dtype=np.float32), min(k, len(items)))


@dataclass
class TrainedTowers:
    """The two towers after distillation and fine-tuning, with what they were trained on."""

    item_tower: ItemTower
    user_tower: UserTower
    item_vecs: np.ndarray  # float32 [n_items, dim], items-table row order
    queries: QueryPositives
    histories: HistoryPairs
    distil_losses: list[float]
    tower_losses: list[float]
    id_report: dict[str, object] = field(default_factory=dict)
    history_report: dict[str, object] = field(default_factory=dict)


@dataclass
class DistilledStudent:
    """The student both towers start from: distilled on the catalog and the train queries,
    which no event touches, so a second training of the towers (the holdout towers of
    :func:`train`) starts from the same one."""

    student: TextEncoder
    proj: torch.Tensor  # [dim, hidden]: the teacher items' principal directions
    losses: list[float]


def distil_towers(
    ds: Dataset,
    cfg: TrainConfig,
    teacher: BertModel,
    teacher_items: np.ndarray,
    timer: StageTimer | None = None,
) -> DistilledStudent:
    """Distil a ``cfg.student_layers``-layer student from ``teacher`` on the catalog and the
    train queries' text. ``teacher_items`` are the teacher's vectors of the items, in row
    order."""
    timer = timer or StageTimer()
    items = ds.items.reset_index(drop=True)
    texts = make_item_texts(items)
    tok = load_tokenizer(tokenizer_path())
    train_queries = sorted(set(ds.queries.loc[ds.queries["split"] == "train", "query_text"]))
    teacher_queries = timer.run(
        "teacher_queries", embed_texts, teacher, train_queries, bf16=cfg.bf16, max_tokens=32
    )
    student, distil_losses = timer.run(
        "distil",
        distil_student,
        teacher,
        tok,
        texts + train_queries,
        np.concatenate([teacher_items, teacher_queries]),
        n_layers=cfg.student_layers,
        dim=cfg.dim,
        epochs=cfg.distil_epochs,
        batch_size=cfg.distil_batch,
        lr=cfg.distil_lr,
        bf16=cfg.bf16,
        seed=cfg.seed,
    )
    return DistilledStudent(student, pca_projection(teacher_items, cfg.dim), distil_losses)


def train_towers(
    ds: Dataset,
    cfg: TrainConfig,
    teacher: BertModel,
    teacher_items: np.ndarray,
    timer: StageTimer | None = None,
    *,
    distilled: DistilledStudent | None = None,
    stage_prefix: str = "",
) -> TrainedTowers:
    """Distil a student (:func:`distil_towers`, unless ``distilled`` is given), then fine-tune
    both towers from it on ``ds`` (its events already cut to the training window).
    ``teacher_items`` are the teacher's vectors of the items, in row order; ``stage_prefix``
    names the fine-tuning stages in ``timer`` (``holdout_``)."""
    timer = timer or StageTimer()
    if distilled is None:
        distilled = distil_towers(ds, cfg, teacher, teacher_items, timer)
    student, proj, distil_losses = distilled.student, distilled.proj, distilled.losses
    items = ds.items.reset_index(drop=True)
    texts = make_item_texts(items)
    pos_of = positions(items)
    tok = load_tokenizer(tokenizer_path())
    item_ids = items["item_id"].to_numpy(np.int64)
    # id vectors for the items with interactions before the cut (ds.events is already cut)
    id_keys = np.intersect1d(ds.events["item_id"].to_numpy(np.int64), item_ids)
    item_tower = ItemTower(copy.deepcopy(student.bert), cfg.dim, id_keys if cfg.item_ids else None)
    user_tower = UserTower(copy.deepcopy(student.bert), cfg.dim)
    with torch.no_grad():
        item_tower.text.proj.weight.copy_(proj)
        user_tower.text.proj.weight.copy_(proj)

    rng = np.random.default_rng(cfg.seed)
    qpos = query_positives(ds.queries, ds.qrels, pos_of, "train")
    hist = history_pairs(ds.events, pos_of, cfg.max_history_pairs, rng)
    if not len(qpos.texts) and not len(hist.target_pos):
        raise ValueError(
            "nothing to fine-tune the towers on: the data set has no train-split queries with "
            "an exact (label 3) item and no positive events (click, add_to_cart, purchase) "
            "after another event of the same user before the cut"
        )
    log.info(
        "fine-tuning on %d queries and %d history pairs", len(qpos.texts), len(hist.target_pos)
    )
    tower_losses = timer.run(
        stage_prefix + "finetune",
        finetune_towers,
        item_tower,
        user_tower,
        tok,
        texts,
        qpos,
        hist,
        cfg,
        item_ids,
    )
    id_report: dict[str, object] = {"n_ids": item_tower.n_ids}
    if item_tower.n_ids and cfg.id_epochs:
        text_table = embed_items(item_tower, tok, texts, bf16=cfg.bf16)
        id_report |= timer.run(
            stage_prefix + "finetune_ids",
            finetune_ids,
            item_tower,
            user_tower,
            text_table,
            hist,
            item_tower.id_rows(item_ids),
            target_log_q(len(texts), qpos, hist),
            cfg,
        )
    item_vecs = timer.run(
        stage_prefix + "embed_items",
        embed_items,
        item_tower,
        tok,
        texts,
        item_ids=item_ids,
        bf16=cfg.bf16,
    )
    history_report = timer.run(
        stage_prefix + "user_history", fit_user_history, user_tower, hist, item_vecs, cfg
    )
    return TrainedTowers(
        item_tower,
        user_tower,
        item_vecs,
        qpos,
        hist,
        distil_losses,
        tower_losses,
        id_report,
        history_report,
    )


def train(data_dir: Path, out_dir: Path, cfg: TrainConfig) -> dict[str, object]:
    """Train all models on the data set in ``data_dir`` and write them to ``out_dir``."""
    torch.manual_seed(cfg.seed)
    timer = StageTimer()
    ds = load_dataset(data_dir)
    until_ts = resolve_cut(ds.events, cfg)
    ds = cut_events(ds, until_ts)
    items = ds.items.reset_index(drop=True)
    texts = make_item_texts(items)
    item_ids = items["item_id"].to_numpy(np.int64)
    tok = load_tokenizer(tokenizer_path())
    teacher = load_teacher()
    teacher_items = timer.run("teacher_items", embed_texts, teacher, texts, bf16=cfg.bf16)
    distilled = distil_towers(ds, cfg, teacher, teacher_items, timer)
    towers = train_towers(ds, cfg, teacher, teacher_items, timer, distilled=distilled)
    item_tower, user_tower, item_vecs = towers.item_tower, towers.user_tower, towers.item_vecs
    qpos, hist = towers.queries, towers.histories
    distil_losses, tower_losses = towers.distil_losses, towers.tower_losses

    prior_at = until_ts if until_ts is not None else _end_ts(ds.events)
    validation = covisit_validation_kind(ds, until_ts)
    fit = holdout_towers(ds, cfg, teacher, teacher_items, distilled, prior_at, validation, timer)
    fit_user, fit_vecs = (fit.user_tower, fit.item_vecs) if fit else (user_tower, item_vecs)
    fit_on = (ds.events, item_ids, prior_at, fit_user, tok, fit_vecs)  # what every fit ranks
    prior, prior_validation = timer.run("prior", fit_tower_prior, *fit_on, cfg, validation)
    covisit, covisit_validation = (
        timer.run("covisit", fit_tower_covisit, *fit_on, prior, cfg, validation=validation)
        if cfg.covisit
        else (None, {})
    )

    item_tokens = item_token_lists(tok, texts)
    # without labelled queries the reranker learns from history contexts: those whose next
    # item falls in the validation window are left out, so the blend for requests without a
    # query is chosen on contexts the cross-encoder never saw (a random-split model's random
    # validation share is not left out: see towers/no_query_blend.py)
    reranker, rerank_losses, blend, n_rerank_pairs = fit_reranker(
        ds,
        texts,
        item_tokens,
        tok,
        teacher,
        user_tower,
        item_vecs,
        _rerank_histories(hist, int(prior_at - VALIDATION_S) if validation == "time" else None),
        cfg,
        timer,
    )
    no_query_blend, no_query_validation = timer.run(
        "no_query_blend",
        fit_tower_no_query_blend,
        ds.events,
        items,
        prior_at,
        fit_user,
        tok,
        fit_vecs,
        prior,
        covisit,
        reranker,
        item_tokens,
        cfg,
        validation=validation,
    )

    out_dir.mkdir(parents=True, exist_ok=True)
    meta = {"dim": cfg.dim, "recency_tau_s": cfg.recency_tau_s}
    save_module(item_tower, item_tower.text.bert.config, out_dir / "item_tower", **meta)
    save_module(user_tower, user_tower.text.bert.config, out_dir / "user_tower", **meta)
    save_module(reranker, reranker.bert.config, out_dir / "reranker", **meta)
    blend.write(out_dir, no_query=no_query_blend)
    np.save(out_dir / TEACHER_ITEM_EMBEDDINGS_FILE, teacher_items)
    np.save(out_dir / ITEM_EMBEDDINGS_FILE, item_vecs)
    save_prior(prior, out_dir)
    if covisit is not None:
        covisit.save(out_dir / COVISIT_FILE)
    digest = hashlib.sha256((out_dir / "item_tower" / "model.safetensors").read_bytes())
    version = datetime.now(UTC).strftime("%Y%m%dT%H%M%S") + "-" + digest.hexdigest()[:8]
    report = {
        "model_version": version,
        "data_dir": str(data_dir.resolve()),
        "config": cfg.model_dump(),
        "n_items": len(items),
        "events_until_ts": until_ts,
        "n_train_events": len(ds.events),
        "n_train_queries": len(qpos.texts),
        "n_history_pairs": int(len(hist.target_pos)),
        "n_rerank_pairs": n_rerank_pairs,
        "seconds": timer.seconds,
        "losses": {
            "distil_per_epoch": distil_losses,
            "towers_first_last": _ends(tower_losses),
            "reranker_first_last": _ends(rerank_losses),
        },
        "item_ids": towers.id_report,
        "user_history": towers.history_report,
        "fit_towers": {"kind": "shared"}
        if fit is None
        else {
            "kind": "holdout",
            "n_train_events": fit.n_events,
            "item_ids": fit.towers.id_report,
            "user_history": fit.towers.history_report,
        },
        "blend": blend.to_dict(),
        "no_query_blend": None
        if no_query_blend is None
        else {**no_query_blend.to_dict(), "validation_recall@50": no_query_validation},
        "prior": {
            **prior.meta(),
            "validation_metric": fit_metric(validation).name,
            "validation_scores": prior_validation,
        },
        "covisit": None
        if covisit is None
        else {
            "kind": covisit.kind,
            **covisit.params(),
            **covisit.settings(),
            "entries": len(covisit),
            "validation": validation,
            "validation_metric": fit_metric(validation).name,
            "validation_scores": covisit_validation,
        },
    }
    (out_dir / TRAIN_REPORT_FILE).write_text(json.dumps(report, indent=2))
    log.info("trained model version %s in %.0f s", version, sum(timer.seconds.values()))
    return report


@dataclass
class HoldoutTowers:
    """Towers trained like the final ones without the events the fits validate on
    (:func:`holdout_towers`); ``n_events`` how many events they trained on."""

    towers: TrainedTowers
    n_events: int

    @property
    def user_tower(self) -> UserTower:
        return self.towers.user_tower

    @property
    def item_vecs(self) -> np.ndarray:
        return self.towers.item_vecs


def holdout_towers(
    ds: Dataset,
    cfg: TrainConfig,
    teacher: BertModel,
    teacher_items: np.ndarray,
    distilled: DistilledStudent,
    at_ts: int,
    validation: str,
    timer: StageTimer,
) -> HoldoutTowers | None:
    """With ``cfg.fit_towers`` holdout or auto (anything but shared): towers fine-tuned from
    the same ``distilled`` student on ``ds``'s events less those the prior, co-visitation and
    no-query blend fits validate on (:func:`towers.prior.validation_events`), for those fits
    to rank with. The final towers saw the validation events, and id vectors memorise them:
    fitted with the final towers, the co-visitation weight trusted ids that the test weeks
    did not reward; with text towers and the RP3beta table, the fit trusted towers that
    scored 0.195 Recall@50 on the validation window and 0.138 on the test week (README, "Fits
    on towers that never saw the validation"). ``None`` with
    shared towers, or when the validation leaves nothing to train on. The random number
    streams are forked, so the final model's other stages are the same with or without this
    pass."""
    if cfg.fit_towers == "shared":
        return None
    from towers.prior import validation_events

    held = validation_events(ds.events, at_ts, validation, seed=cfg.seed)
    kept = dataclasses.replace(ds, events=ds.events[~held].reset_index(drop=True))
    if not held.any() or not len(kept.events):
        log.warning("holdout towers: nothing held out or nothing left; the fits use the final")
        return None
    log.info(
        "holdout towers: training again on %d events, without the %d the fits validate on",
        len(kept.events),
        int(held.sum()),
    )
    np_state = np.random.get_state()
    try:
        with torch.random.fork_rng():
            torch.manual_seed(cfg.seed)
            towers = train_towers(
                kept,
                cfg,
                teacher,
                teacher_items,
                timer,
                distilled=distilled,
                stage_prefix="holdout_",
            )
    finally:
        np.random.set_state(np_state)
    return HoldoutTowers(towers, len(kept.events))


def fit_reranker(
    ds: Dataset,
    texts: list[str],
    item_tokens: list[np.ndarray],
    tok: Tokenizer,
    teacher: BertModel,
    user_tower: UserTower,
    item_vecs: np.ndarray,
    hist: HistoryPairs,
    cfg: TrainConfig,
    timer: StageTimer | None = None,
    teacher_reranker: CrossEncoder | None = None,
) -> tuple[CrossEncoder, list[float], Blend, int]:
    """Train a ``cfg.reranker_layers``-layer cross-encoder (initialised from the teacher's
    first layers) and fit the blend over the trained retriever ``user_tower`` / ``item_vecs``.

    ``ds`` is already cut to the training window; ``texts`` / ``item_tokens`` are the items'
    texts and token ids in items-table row order. Labelled train-split queries are the
    training contexts; without any, history contexts (``hist``) stand in;
    ``teacher_reranker`` a cross-encoder to distil from (``cfg.rerank_distil_weight``). Returns the
    reranker, its losses, the blend and the number of training pairs.

    Raises:
        ValueError: nothing to train the reranker on.
    """
    timer = timer or StageTimer()
    items = ds.items.reset_index(drop=True)
    item_ids = items["item_id"].to_numpy(np.int64)
    if cfg.rerank_item_tokens is not None:
        item_tokens = [t[: cfg.rerank_item_tokens] for t in item_tokens]
    # graded pairs plus hard negatives mined with the trained retriever
    _, q_texts, q_labels = graded_labels(ds.queries, ds.qrels, "train")
    if q_texts:
        q_vecs = embed_queries(user_tower, tok, q_texts, bf16=cfg.bf16)
    else:  # no labelled queries: learn to rerank for "what next" from history contexts
        titles = items["title"].astype(str).tolist()
        q_texts, q_labels, rows = history_contexts(
            hist, titles, item_ids, cfg.rerank_steps * cfg.rerank_batch // 4, cfg.seed
        )
        if not q_texts:
            raise ValueError(
                "cannot train the reranker: no train-split queries with labels and no events "
                "with a history before them"
            )
        log.info("no labelled queries: reranker trained on %d history contexts", len(q_texts))
        weights = padded_recency_weights(hist.hist_pos[rows], hist.hist_ts[rows], cfg.recency_tau_s)
        q_vecs = embed_histories(
            user_tower, tok, hist.hist_pos[rows], weights, item_vecs, bf16=cfg.bf16
        )
    _, top = exact_top_k(q_vecs, item_vecs, cfg.hard_negatives)
    retrieved = [[int(item_ids[p]) for p in row if p >= 0] for row in top]
    pos_map = {int(i): int(p) for i, p in zip(item_ids, range(len(item_ids)))}
    pairs = training_pairs(q_labels, retrieved, pos_map)
    reranker = CrossEncoder(make_student(teacher, cfg.reranker_layers))
    rerank_losses = timer.run(
        "rerank",
        train_cross_encoder,
        reranker,
        tok,
        q_texts,
        item_tokens,
        pairs,
        cfg,
        teacher_reranker,
    )

    popularity = item_popularity(ds.events, item_ids)
    blend = timer.run(
        "blend",
        _fit_blend,
        ds,
        user_tower,
        reranker,
        tok,
        item_vecs,
        item_ids,
        item_tokens,
        texts,
        popularity,
        cfg,
    )
    return reranker, rerank_losses, blend, int(len(pairs[0]))


def _task_user_vectors(
    user_tower: UserTower,
    tok: Tokenizer,
    item_vecs: np.ndarray,
    row_of: dict[int, int],
    cfg: TrainConfig,
) -> Callable[[NextItemTask], np.ndarray]:
    """The user vectors of a next-item task's histories (empty query), as the prior,
    co-visitation and no-query blend fits rank them; ``row_of`` maps item ids to rows of
    ``item_vecs``."""

    def user_vectors(task: NextItemTask) -> np.ndarray:
        rows, weights = history_matrix(task, row_of, cfg.recency_tau_s)
        return embed_histories(user_tower, tok, rows, weights, item_vecs, bf16=cfg.bf16)

    return user_vectors


def fit_tower_prior(
    events: pd.DataFrame,
    item_ids: np.ndarray,
    at_ts: int,
    user_tower: UserTower,
    tok: Tokenizer,
    item_vecs: np.ndarray,
    cfg: TrainConfig,
    validation: str = "time",
) -> tuple[ItemPrior, dict[str, float]]:
    """The retriever's popularity prior as of ``at_ts``, its weight fitted with ``user_tower``
    on the newest events before it, or on a random share of them (``validation="random"``: a
    model for the random protocol; see :func:`towers.prior.fit_model_prior`)."""
    row_of = {int(i): r for r, i in enumerate(item_ids)}
    user_vectors = _task_user_vectors(user_tower, tok, item_vecs, row_of, cfg)
    return fit_model_prior(
        events, item_ids, at_ts, user_vectors, item_vecs, seed=cfg.seed, validation=validation
    )


def fit_tower_covisit(
    events: pd.DataFrame,
    item_ids: np.ndarray,
    at_ts: int,
    user_tower: UserTower,
    tok: Tokenizer,
    item_vecs: np.ndarray,
    prior: ItemPrior,
    cfg: TrainConfig,
    validation_s: float | None = None,
    validation: str = "time",
) -> tuple[CovisitTable, dict[str, float]]:
    """The retriever's co-visitation table as of ``at_ts``, its weight fitted with
    ``user_tower`` and ``prior`` on the newest ``validation_s`` seconds before it, or on a
    random share of the events (``validation="random"``: a model for the random protocol;
    see :func:`towers.covisit.fit_model_covisit`, which has the defaults)."""
    row_of = {int(i): r for r, i in enumerate(item_ids)}
    user_vectors = _task_user_vectors(user_tower, tok, item_vecs, row_of, cfg)
    return fit_model_covisit(
        events,
        item_ids,
        at_ts,
        user_vectors,
        item_vecs,
        prior=prior,
        seed=cfg.seed,
        validation_s=validation_s,
        validation=validation,
    )


def fit_tower_no_query_blend(
    events: pd.DataFrame,
    items: pd.DataFrame,
    at_ts: int,
    user_tower: UserTower,
    tok: Tokenizer,
    item_vecs: np.ndarray,
    prior: ItemPrior,
    covisit: CovisitTable | None,
    reranker: CrossEncoder,
    item_tokens: list[np.ndarray],
    cfg: TrainConfig,
    validation: str = "time",
) -> tuple[Blend | None, dict[str, float]]:
    """The reranker's blend for requests without a query, chosen on the co-visitation fit's
    validation (towers/no_query_blend.py) with the trained towers, prior, table and
    cross-encoder; ``items`` in item-table order (``item_tokens`` rows); ``None`` when there
    is nothing to validate on (the search blend then serves those requests too)."""
    item_ids = items["item_id"].to_numpy(np.int64)
    titles = items["title"].astype(str).tolist()
    row_of = {int(i): r for r, i in enumerate(item_ids)}
    if cfg.rerank_item_tokens is not None:
        item_tokens = [t[: cfg.rerank_item_tokens] for t in item_tokens]
    user_vectors = _task_user_vectors(user_tower, tok, item_vecs, row_of, cfg)
    val = validation_ranking(
        events,
        item_ids,
        at_ts,
        user_vectors,
        item_vecs,
        prior=prior,
        kind=covisit.kind if covisit is not None else "auto",
        **(covisit.params() if covisit is not None else {"l2": EASE_L2S[0]}),
        max_users=NO_QUERY_BLEND_USERS,
        seed=cfg.seed,
        validation=validation,
    )
    if val is None:
        log.warning("no users to fit the blend without a query on: the search blend serves")
        return None, {}
    reranker.eval()

    def logits(history: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        # the served context (serving/reranker.py context_tokens): the newest known titles
        recent = [row_of[int(i)] for i in history[::-1] if int(i) in row_of][:CONTEXT_ITEMS]
        context = query_token_list(tok, " ".join(titles[r] for r in recent))
        rows = [item_tokens[row_of[int(c)]] for c in candidates]
        return score_candidates(reranker, context, rows, bf16=cfg.bf16)

    return fit_no_query_blend(val, logits, covisit)


def _rerank_histories(hist: HistoryPairs, until_ts: int | None) -> HistoryPairs:
    """The history pairs the reranker may learn from: those with a target before
    ``until_ts`` (all when ``None``, or when none is)."""
    if until_ts is None:
        return hist
    kept = hist.before(until_ts)
    return kept if len(kept.target_pos) else hist


#: Validation users the blend without a query is chosen on (100 candidates cross-scored each).
NO_QUERY_BLEND_USERS = 300


def covisit_validation_kind(ds: Dataset, until_ts: int | None) -> str:
    """``random`` for a model trained on every event of a random split (`towerserve data
    split`, then `train --all-events`: the random protocol's targets are spread over the
    whole time range), else ``time`` (the next events after the training cut)."""
    from towers.data.split import split_info

    return "random" if until_ts is None and split_info(ds) is not None else "time"


def _end_ts(events: pd.DataFrame) -> int:
    """One second after the newest event (0 for an empty log)."""
    return int(events["ts"].max()) + 1 if len(events) else 0


def resolve_cut(events: pd.DataFrame, cfg: TrainConfig) -> int | None:
    """The unix second before which events are trained on, or ``None`` for all events.

    ``cfg.until_ts`` wins; otherwise ``cfg.until_frac`` of the way through the events' time
    range; with no events there is nothing to cut.
    """
    if cfg.until_ts is not None:
        return int(cfg.until_ts)
    if cfg.until_frac is None or len(events) == 0:
        return None
    return cut_ts_at(events, cfg.until_frac)


def cut_events(ds: Dataset, until_ts: int | None) -> Dataset:
    """``ds`` with only the events before ``until_ts`` (unix s; ``None`` keeps them all)."""
    if until_ts is None:
        return ds
    kept = ds.events[ds.events["ts"] < until_ts].reset_index(drop=True)
    log.info(
        "training on the %d of %d events before %s (unix %d); later events are held out",
        len(kept),
        len(ds.events),
        datetime.fromtimestamp(until_ts, UTC).isoformat(),
        until_ts,
    )
    return dataclasses.replace(ds, events=kept)


def _ends(losses: list[float], n: int = 20) -> list[float]:
    """Mean loss over the first and the last ``n`` steps."""
    if not losses:
        return []
    return [round(float(np.mean(losses[:n])), 4), round(float(np.mean(losses[-n:])), 4)]


def _fit_blend(
    ds, user_tower, reranker, tok, item_vecs, item_ids, item_tokens, item_texts, popularity, cfg
) -> Blend:  # type: ignore[no-untyped-def]
    """Fit the blend on validation queries' retrieved candidates (never on test queries)."""
    _, v_texts, v_labels = graded_labels(ds.queries, ds.qrels, "valid")
    if not v_texts:
        log.warning("no validation queries: blend falls back to the reranker score only")
        return Blend.rerank_only()
    v_vecs = embed_queries(user_tower, tok, v_texts, bf16=cfg.bf16)
    scores, top = exact_top_k(v_vecs, item_vecs, cfg.blend_candidates)
    lexical = LexicalIndex.build(item_texts)
    feats, grades = [], []
    for text, lab, s_row, p_row in zip(v_texts, v_labels, scores, top):
        ce = score_candidates(
            reranker, query_token_list(tok, text), [item_tokens[p] for p in p_row], bf16=cfg.bf16
        )
        feats.append(blend_features(ce, s_row, popularity[p_row], lexical.scores(text, p_row)))
        grades.append([lab.get(int(item_ids[p]), 0) for p in p_row])
    blend = fit_blend(np.concatenate(feats), np.concatenate(grades).astype(np.float32))
    log.info("blend weights %s bias %.3f", blend.weights.tolist(), blend.bias)
    return blend
