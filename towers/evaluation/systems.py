"""The systems under evaluation, built from one trained artifacts folder.

:class:`Loaded` holds what every system reads (item table, teacher vectors, towers, reranker,
blend, FAISS index); :func:`search_systems` and :func:`recommendation_systems` turn it into
callables with the signatures of :mod:`towers.evaluation.search` and
:mod:`towers.evaluation.recommend`. File names, the manifest and the blend are the bundle
contract's (``towers/bundle_contract.py``), so :class:`BlendScorer` scores candidates exactly
as the served reranker does.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np
import pandas as pd
import torch
from tokenizers import Tokenizer
from transformers import BertModel

from towers.bundle_contract import (
    ARTIFACTS_BUNDLE_DIR,
    BLEND_FILE,
    COVISIT_FILE,
    INDEX_FILE,
    ITEM_EMBEDDINGS_FILE,
    MANIFEST_FILE,
    TEACHER_ITEM_EMBEDDINGS_FILE,
    TRAIN_REPORT_FILE,
    Blend,
    load_manifest,
)
from towers.covisit import CovisitTable, covisit_lists
from towers.data import Dataset, item_texts, load_dataset
from towers.data.split import split_info
from towers.encoder import mean_pool
from towers.evaluation.baselines import BM25Ranker, PopularityRanker
from towers.evaluation.collaborative import (
    ALS,
    EASE,
    EASE_MAX_ITEMS,
    Interactions,
    ItemKNN,
    RP3Beta,
    fit_ease_l2,
    fit_rp3beta,
    interactions,
    top_k_excluding,
)
from towers.evaluation.recommend import (
    NextItemTask,
    RecSystem,
    exclude_history,
    history_matrix,
    pooled_history,
)
from towers.evaluation.search import SearchSystem
from towers.examples import item_popularity
from towers.features import (
    MAX_HISTORY,
    MAX_QUERY_TOKENS,
    PRIOR_OVERFETCH,
    PriorLookup,
    rank_with_prior,
)
from towers.finetune import embed_histories, embed_items, embed_queries
from towers.index import apply_search_params, build_index
from towers.lexical import LexicalIndex
from towers.metrics import fit_metric
from towers.models import CrossEncoder, UserTower, load_module
from towers.prior import ItemPrior, load_prior
from towers.rerank_train import score_candidates
from towers.teacher import embed_texts, load_teacher, tokenizer_path
from towers.text import encode, item_token_lists, load_tokenizer, query_token_list

log = logging.getLogger(__name__)

SEARCH_SYSTEMS = (
    "popularity",
    "bm25",
    "teacher_exact",
    "student_exact",
    "student_faiss",
    "student_faiss_rerank",
)
RECOMMENDATION_SYSTEMS = (
    "popularity",
    "popularity_all",
    "item_knn",
    "rp3beta",
    "ease",
    "als",
    "teacher_exact",
    "student_exact",
    "student_faiss",
    "student_faiss_covisit",
)
#: The collaborative baselines (:mod:`towers.evaluation.collaborative`): item identity only.
COLLABORATIVE_SYSTEMS = ("item_knn", "rp3beta", "ease", "als")
#: Days of behaviour before a window that the (recent) popularity baseline counts;
#: ``popularity_all`` counts every event before the window.
POPULARITY_DAYS = 7


@dataclass
class Loaded:
    """One artifacts folder and its data set, loaded for evaluation."""

    ds: Dataset
    report: dict
    item_ids: np.ndarray  # int64 [n], items-table order
    texts: list[str]
    table: np.ndarray  # float32 [n, dim] item-tower vectors
    teacher_items: np.ndarray  # float32 [n, 384]
    user_tower: UserTower
    reranker: CrossEncoder | None
    blend: Blend
    index: faiss.Index
    index_params: dict
    n_candidates: int
    tok: Tokenizer
    teacher: BertModel
    bf16: bool
    prior: ItemPrior | None = None
    covisit: CovisitTable | None = None

    @property
    def row_of(self) -> dict[int, int]:
        return {int(i): r for r, i in enumerate(self.item_ids)}

    @property
    def cut_ts(self) -> int | None:
        """Events at or after this unix second were held out of training (None: none were)."""
        cut = self.report.get("events_until_ts")
        return None if cut is None else int(cut)


def load(artifacts: Path, data_dir: Path | None = None) -> Loaded:
    """Load ``artifacts`` (from ``towerserve train``) and its data set.

    The FAISS index is the exported one (``artifacts/bundle``) when its manifest names this
    model version, else one built here the way ``towerserve export`` builds it.

    Raises:
        FileNotFoundError: ``artifacts`` has no ``train_report.json``.
    """
    report_path = artifacts / TRAIN_REPORT_FILE
    if not report_path.is_file():
        raise FileNotFoundError(f"no {TRAIN_REPORT_FILE} in {artifacts}: run `towerserve train`")
    report = json.loads(report_path.read_text())
    data_dir = data_dir or Path(report["data_dir"])
    ds = load_dataset(data_dir)
    items = ds.items.reset_index(drop=True)
    texts = item_texts(items)
    item_ids = items["item_id"].to_numpy(np.int64)
    tok = load_tokenizer(tokenizer_path())
    bf16 = bool(report["config"].get("bf16", True))
    user_tower = load_module("user_tower", artifacts / "user_tower")
    table_path = artifacts / ITEM_EMBEDDINGS_FILE
    if table_path.is_file():
        table = np.load(table_path)
    else:  # artifacts from before the table was saved
        item_tower = load_module("item_tower", artifacts / "item_tower")
        table = embed_items(item_tower, tok, texts, bf16=bf16)  # type: ignore[arg-type]
    if len(table) != len(item_ids):
        raise ValueError(
            f"{artifacts} was trained on {len(table)} items but {data_dir} has {len(item_ids)}"
        )
    teacher = load_teacher()
    teacher_path = artifacts / TEACHER_ITEM_EMBEDDINGS_FILE
    teacher_items = (
        np.load(teacher_path) if teacher_path.is_file() else embed_texts(teacher, texts, bf16=bf16)
    )
    index, params, n_candidates = _index(artifacts, report, table, item_ids)
    reranker_dir = artifacts / "reranker"
    reranker = load_module("reranker", reranker_dir) if reranker_dir.is_dir() else None
    blend_path = artifacts / BLEND_FILE
    blend = Blend.from_json(blend_path) if blend_path.is_file() else Blend.rerank_only()
    return Loaded(
        ds,
        report,
        item_ids,
        texts,
        table,
        teacher_items,
        user_tower,  # type: ignore[arg-type]
        reranker,  # type: ignore[arg-type]
        blend,
        index,
        params,
        n_candidates,
        tok,
        teacher,
        bf16,
        load_prior(artifacts),
        CovisitTable.load(artifacts / COVISIT_FILE)
        if (artifacts / COVISIT_FILE).is_file()
        else None,
    )


def _load_covisit(artifacts: Path) -> CovisitTable | None:
    """The trained co-visitation table, or ``None`` (trained before it existed, or off)."""
    path = artifacts / COVISIT_FILE
    return CovisitTable.load(path) if path.is_file() else None


def _index(
    artifacts: Path, report: dict, table: np.ndarray, item_ids: np.ndarray
) -> tuple[faiss.Index, dict, int]:
    bundle = artifacts / ARTIFACTS_BUNDLE_DIR
    if (bundle / MANIFEST_FILE).is_file():
        manifest = load_manifest(bundle)
        if manifest.model_version == report.get("model_version"):
            index = faiss.read_index(str(bundle / INDEX_FILE))
            apply_search_params(index, manifest.index)
            return index, manifest.index, manifest.n_candidates
    index, params = build_index(table, item_ids)
    return index, params, 100


def exact_index(vectors: np.ndarray) -> faiss.Index:
    """Exact inner-product search over ``vectors`` (returns row positions)."""
    index = faiss.IndexFlatIP(vectors.shape[1])
    index.add(np.ascontiguousarray(vectors, dtype=np.float32))
    return index


@torch.inference_mode()
def teacher_queries(m: Loaded, texts: list[str]) -> np.ndarray:
    """Teacher vectors of query texts (truncated like the user tower's), ``[n, 384]``."""
    ids, mask = encode(m.tok, texts, MAX_QUERY_TOKENS)
    ids_t, mask_t = torch.from_numpy(ids), torch.from_numpy(mask)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=m.bf16):
        hidden = m.teacher(input_ids=ids_t, attention_mask=mask_t).last_hidden_state
    return torch.nn.functional.normalize(mean_pool(hidden.float(), mask_t), dim=-1).numpy()


def search_systems(m: Loaded, names: tuple[str, ...] = SEARCH_SYSTEMS) -> dict[str, SearchSystem]:
    """The named search systems over ``m`` (unknown names raise ``ValueError``)."""
    unknown = set(names) - set(SEARCH_SYSTEMS)
    if unknown:
        raise ValueError(f"unknown search systems {sorted(unknown)}: allowed {SEARCH_SYSTEMS}")
    if "student_faiss_rerank" in names and m.reranker is None:
        raise ValueError("student_faiss_rerank needs a trained reranker in the artifacts")
    rows = m.item_ids
    systems: dict[str, SearchSystem] = {}
    if "popularity" in names:
        pop = PopularityRanker(m.ds.events, rows, until_ts=m.cut_ts)
        systems["popularity"] = lambda q, k: pop.top(k)
    if "bm25" in names:
        bm25 = BM25Ranker(m.texts, rows)
        systems["bm25"] = bm25.search
    if "teacher_exact" in names:
        t_index = exact_index(m.teacher_items)

        def teacher(q: str, k: int) -> list[int]:
            _, top = t_index.search(teacher_queries(m, [q]), k)
            return [int(rows[p]) for p in top[0] if p >= 0]

        systems["teacher_exact"] = teacher
    s_index = exact_index(m.table)

    def student_vec(q: str) -> np.ndarray:
        return embed_queries(m.user_tower, m.tok, [q], bf16=m.bf16)

    if "student_exact" in names:

        def student(q: str, k: int) -> list[int]:
            _, top = s_index.search(student_vec(q), k)
            return [int(rows[p]) for p in top[0] if p >= 0]

        systems["student_exact"] = student
    if "student_faiss" in names:

        def student_faiss(q: str, k: int) -> list[int]:
            _, ids = m.index.search(student_vec(q), k)
            return [int(i) for i in ids[0] if i >= 0]

        systems["student_faiss"] = student_faiss
    if "student_faiss_rerank" in names:
        systems["student_faiss_rerank"] = _reranking(m, student_vec)
    return systems


class BlendScorer:
    """The served reranker's blended score, computed offline with the trained PyTorch
    cross-encoder (``m.bf16`` precision) and no time budget: the features the served reranker
    reads from its bundle (item tokens, popularity, BM25 over the item texts) rebuilt from
    the data set, combined by ``m.blend`` (:meth:`towers.bundle_contract.Blend.score`)."""

    def __init__(self, m: Loaded) -> None:
        if m.reranker is None:
            raise ValueError("blend scores need a trained reranker in the artifacts")
        self.m = m
        self.reranker = m.reranker
        self.row_of = m.row_of
        self.tokens = item_token_lists(m.tok, m.texts)
        # as exported (export/bundle.py): events before the training cut only
        cut = m.cut_ts
        seen = m.ds.events if cut is None else m.ds.events[m.ds.events["ts"] < cut]
        self.popularity = item_popularity(seen, m.item_ids)
        # the served reranker reads a lexical index when the bundle has one; a weight of 0
        # (legacy blends) makes the feature irrelevant, so it is not built then
        self.lexical = LexicalIndex.build(m.texts) if m.blend.uses_lexical else None

    def scores(self, query: str, item_ids: np.ndarray, retrieval: np.ndarray) -> np.ndarray:
        """Blended scores float32 ``[n]`` of the items ``item_ids`` int64 ``[n]`` (all in the
        catalog) for ``query``, given their retrieval scores float32 ``[n]``."""
        rows = np.array([self.row_of[int(i)] for i in item_ids], dtype=np.int64)
        ce = score_candidates(
            self.reranker,
            query_token_list(self.m.tok, query),
            [self.tokens[r] for r in rows],
            bf16=self.m.bf16,
        )
        lexical = None
        if self.lexical is not None and query.strip() and len(rows):
            lexical = self.lexical.scores(query, rows)
        return self.m.blend.score(ce, retrieval, self.popularity[rows], lexical)


def _reranking(m: Loaded, student_vec: Callable[[str], np.ndarray]) -> SearchSystem:
    """FAISS top ``n_candidates``, reordered by the blend of the cross-encoder with the
    retrieval, popularity and lexical scores, as the served reranker does without a time
    budget; deeper FAISS results follow in retrieval order."""
    scorer = BlendScorer(m)

    def rerank(q: str, k: int) -> list[int]:
        scores, ids = m.index.search(student_vec(q), max(k, m.n_candidates))
        keep = ids[0] >= 0
        ids, scores = ids[0][keep], scores[0][keep]
        head, tail = ids[: m.n_candidates], ids[m.n_candidates :]
        blended = scorer.scores(q, head, scores[: len(head)])
        order = np.argsort(-blended, kind="stable")
        return [int(i) for i in head[order]] + [int(i) for i in tail]

    return rerank


def recommendation_systems(
    m: Loaded,
    names: tuple[str, ...] = RECOMMENDATION_SYSTEMS,
    user_tower: UserTower | None = None,
    prior: ItemPrior | None = None,
) -> dict[str, RecSystem]:
    """The named next-item systems over ``m``; ``user_tower`` and ``prior`` replace ``m``'s
    (to compare an updated model on the same item table).

    ``student_exact`` ranks by cosine alone (the two towers as such); ``student_faiss`` ranks
    the way the served retriever does: the FAISS index, re-ranked with the model's
    popularity prior (see :mod:`towers.prior`).
    """
    unknown = set(names) - set(RECOMMENDATION_SYSTEMS)
    if unknown:
        raise ValueError(
            f"unknown recommendation systems {sorted(unknown)}: allowed {RECOMMENDATION_SYSTEMS}"
        )
    tower = user_tower or m.user_tower
    tau_s = float(m.report["config"].get("recency_tau_s", 2 * 86400.0))
    row_of = m.row_of

    def depth(task: NextItemTask) -> int:
        """Extra depth so that excluding the history (or the excluded items) leaves k items."""
        return max([MAX_HISTORY, *(len(e) for e in task.excluded)])

    systems: dict[str, RecSystem] = {}
    if "popularity" in names:

        def popularity(task: NextItemTask, k: int) -> list[list[int]]:
            pop = PopularityRanker(
                m.ds.events,
                m.item_ids,
                until_ts=task.start_ts,
                since_ts=task.start_ts - POPULARITY_DAYS * 86_400,
            )
            return [pop.top(k, exclude=h) for h in task.excluded]

        systems["popularity"] = popularity
    if "popularity_all" in names:

        def popularity_all(task: NextItemTask, k: int) -> list[list[int]]:
            pop = PopularityRanker(m.ds.events, m.item_ids, until_ts=task.start_ts)
            return [pop.top(k, exclude=h) for h in task.excluded]

        systems["popularity_all"] = popularity_all
    for name in COLLABORATIVE_SYSTEMS:
        if name == "ease" and m.ds.events["item_id"].nunique() > EASE_MAX_ITEMS:
            log.warning("ease skipped: more than %d items with interactions", EASE_MAX_ITEMS)
            continue
        if name in names:
            systems[name] = _collaborative(m, name)
    if "teacher_exact" in names:
        t_index = exact_index(m.teacher_items)

        def teacher(task: NextItemTask, k: int) -> list[list[int]]:
            rows, weights = history_matrix(task, row_of, tau_s)
            vecs = pooled_history(m.teacher_items, rows, weights)
            _, top = t_index.search(vecs, k + depth(task))
            return exclude_history(top, m.item_ids, task, k)

        systems["teacher_exact"] = teacher
    s_index = exact_index(m.table)

    def user_vecs(task: NextItemTask) -> np.ndarray:
        rows, weights = history_matrix(task, row_of, tau_s)
        return embed_histories(tower, m.tok, rows, weights, m.table, bf16=m.bf16)

    if "student_exact" in names:

        def student(task: NextItemTask, k: int) -> list[list[int]]:
            _, top = s_index.search(user_vecs(task), k + depth(task))
            return exclude_history(top, m.item_ids, task, k)

        systems["student_exact"] = student
    if "student_faiss" in names:
        prior_ = prior or m.prior
        weight = prior_.weight if prior_ is not None else 0.0
        lookup = PriorLookup(m.item_ids, prior_.values, prior_.default) if prior_ else None

        def student_faiss(task: NextItemTask, k: int) -> list[list[int]]:
            want = max(m.n_candidates, k + depth(task))
            if weight:
                cos, ids = m.index.search(user_vecs(task), PRIOR_OVERFETCH * want)
                assert lookup is not None
                _, ids = rank_with_prior(cos, ids, lookup(ids), weight)
                ids = ids[:, :want]
            else:
                _, ids = m.index.search(user_vecs(task), want)
            out = []
            for row, hist in zip(ids, task.excluded):
                seen = set(map(int, hist))
                out.append([int(i) for i in row if i >= 0 and int(i) not in seen][:k])
            return out

        systems["student_faiss"] = student_faiss
    if "student_faiss_covisit" in names and m.covisit is not None:
        table = m.covisit
        prior_ = prior or m.prior
        pw = prior_.weight if prior_ is not None else 0.0
        plookup = PriorLookup(m.item_ids, prior_.values, prior_.default) if prior_ else None

        def student_faiss_covisit(task: NextItemTask, k: int) -> list[list[int]]:
            # the served retriever's ranking of a request without a query (serving/retriever.py)
            # with the history a request hands on (up to LONG_HISTORY ids)
            want = max(m.n_candidates, k + depth(task))
            fetch = PRIOR_OVERFETCH * want if pw > 0 else want
            cos, ids = m.index.search(user_vecs(task), fetch)
            return covisit_lists(
                cos,
                ids,
                table,
                task.long_histories,
                k,
                task.excluded,
                depth=want,
                prior=plookup,
                prior_weight=pw,
            )

        systems["student_faiss_covisit"] = student_faiss_covisit
    return systems


def _collaborative(m: Loaded, name: str) -> RecSystem:
    """A collaborative baseline fitted on the events before each task's start (fits are
    cached per start time: the recommendation section asks once, drift once per window).
    EASE's ridge is chosen on validation before that start, as the served table's is
    (:func:`fit_ease_l2`); the system's ``settings`` attribute records it per start."""
    fitted: dict[int, tuple[Interactions, ItemKNN | RP3Beta | EASE | ALS]] = {}
    settings: dict[str, dict[str, object]] = {}
    validation = "random" if m.cut_ts is None and split_info(m.ds) is not None else "time"

    def fit(data: Interactions, start_ts: int) -> ItemKNN | RP3Beta | EASE | ALS:
        if name == "item_knn":
            return ItemKNN(data)
        if name == "als":
            return ALS(data)
        metric = fit_metric(validation).name
        if name == "rp3beta":
            (alpha, beta), ab_scores = fit_rp3beta(
                m.ds.events, m.item_ids, start_ts, validation=validation
            )
            settings[str(start_ts)] = {
                "alpha": alpha,
                "beta": beta,
                "validation": validation,
                metric: ab_scores,
            }
            return RP3Beta(data, alpha=alpha, beta=beta)
        l2, scores = fit_ease_l2(m.ds.events, m.item_ids, start_ts, validation=validation)
        settings[str(start_ts)] = {"l2": l2, "validation": validation, metric: scores}
        return EASE(data, l2=l2)

    def system(task: NextItemTask, k: int) -> list[list[int]]:
        if task.start_ts not in fitted:
            data = interactions(m.ds.events, m.item_ids, until_ts=task.start_ts)
            fitted[task.start_ts] = (data, fit(data, task.start_ts))
        data, model = fitted[task.start_ts]
        out: list[list[int]] = []
        for lo in range(0, len(task), COLLABORATIVE_BATCH):
            hi = min(lo + COLLABORATIVE_BATCH, len(task))
            rows = data.user_rows(task.user_ids[lo:hi], task.hist_ids[lo:hi])
            out += top_k_excluding(model.scores(rows), m.item_ids, task.excluded[lo:hi], k)
        return out

    system.settings = settings  # type: ignore[attr-defined]
    return system


#: Users scored at once by a collaborative baseline (``[batch, n_items]`` float32 scores).
COLLABORATIVE_BATCH = 256


def events_range(events: pd.DataFrame) -> tuple[int, int]:
    """``(first ts, last ts + 1)`` of the behaviour log, unix seconds."""
    return int(events["ts"].min()), int(events["ts"].max()) + 1
