"""Item changes between rebuilds: a durable change log and the small delta searched beside
the main index (issue 11 item 4).

Adds, updates and deletes reach the ``catalog`` Triton model, which checks them, embeds the
new texts with the served item tower and appends them to :class:`ItemChangeLog`: one SQLite
file in WAL mode beside the repository (``<repository>.items.sqlite``, outside the folder
``towerserve export`` replaces), ``synchronous=FULL``, so an acknowledged change is fsynced and
survives a restart. Each ``retriever`` instance holds a :class:`DeltaWatcher`: at most every
``poll_s`` seconds (default 0.5 s) a request reads the log's newest sequence number (one
primary-key lookup) and, when it moved, rebuilds its :class:`ItemDelta` (an exact
inner-product FAISS index over the upserted vectors, plus the deleted ids).
:meth:`serving.retriever.Retriever.search` then drops deleted ids and the main-index hits an
upsert supersedes, searches the delta and merges both by score.

Limits: the delta is a flat (exact) index, meant for thousands of changes between rebuilds,
not millions; a full rebuild (``towerserve index build`` + swap) folds it in. Upserts carry
the item-tower ``model_version`` that embedded them; a retriever uses an item's newest change
with a vector of its own model version for the same text, and skips the item (warned) when
there is none. ``towerserve publish`` and ``rollback`` re-embed the live upserts with the
model they switch to before the switch, and once more after it
(:meth:`ItemChangeLog.carry_forward`), so items changed while serving stay served across a
model change. The reranker reads the same log (:class:`RerankerDelta`): a changed item's
tokens and title are appended to its tables (its popularity and lexical feature are 0 until
the next rebuild).
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import faiss
import numpy as np
from tokenizers import Tokenizer

from serving.backend import float_parameter, int_parameter
from serving.bundle import check_model_version, load_manifest
from serving.catalog import ItemTexts
from serving.errors import RequestError
from serving.graphs import runtime_from_params
from serving.item_tower import ItemEncoder, decode_texts
from serving.reranker import Reranker
from serving.sqlite_wal import open_wal
from serving.tensors import int_vector, require
from towers.bundle_contract import ITEM_IDS_FILE, REMOVED_IDS_FILE, TOKENIZER_FILE
from towers.lexical import LexicalIndex
from towers.text import item_token_lists, load_tokenizer

log = logging.getLogger(__name__)

__all__ = [
    "OPS",
    "CatalogStage",
    "ChangeChecker",
    "DeltaWatcher",
    "ItemChange",
    "ItemChangeError",
    "ItemChangeLog",
    "ItemDelta",
    "PaddedLexical",
    "RerankerDelta",
    "catalog_stage",
    "default_path",
    "log_path",
    "optional_watcher",
    "texts_with_delta",
    "watcher_for",
]

#: Change kinds a request may carry.
OPS = ("add", "update", "delete")
#: Changes per request at most.
MAX_BATCH = 1000
#: Characters of an item text kept in the log.
MAX_TEXT_CHARS = 4096
#: Characters of a changed item's text that serve as its title in responses.
TITLE_CHARS = 120

SCHEMA = (
    "CREATE TABLE IF NOT EXISTS changes ("
    " seq INTEGER PRIMARY KEY AUTOINCREMENT,"
    " item_id INTEGER NOT NULL, op TEXT NOT NULL, text TEXT NOT NULL,"
    " vector BLOB, model_version TEXT NOT NULL, ts REAL NOT NULL)",
    "CREATE INDEX IF NOT EXISTS changes_by_item ON changes (item_id, seq)",
)
LATEST = (
    "SELECT item_id, op, text, vector, model_version, seq FROM changes WHERE seq IN "
    "(SELECT MAX(seq) FROM changes GROUP BY item_id)"
)
#: Every upsert embedded by one model version, oldest first.
UPSERTS_OF = (
    "SELECT item_id, text, vector FROM changes WHERE model_version = ? AND op != 'delete' "
    "ORDER BY seq"
)


class ItemChangeError(RuntimeError):
    """The change log cannot be opened, read or written."""


def default_path(repository: Path) -> Path:
    """The change log of a repository: ``<repository>.items.sqlite`` beside it."""
    repository = Path(repository).resolve()
    return repository.parent / f"{repository.name}.items.sqlite"


@dataclass(frozen=True)
class ItemChange:
    """One checked change: ``op`` one of :data:`OPS`; ``text`` empty for a delete; ``vector``
    float32 ``[D]`` (L2-normalised item-tower output) for an add or update."""

    item_id: int
    op: str
    text: str = ""
    vector: np.ndarray | None = None


class ItemChangeLog:
    """The change log in SQLite file ``path`` (created with its folder when missing). Many
    processes may open it: WAL lets readers run beside the writer; ``busy_timeout_ms`` is how
    long a write waits for another one."""

    def __init__(self, path: Path, *, busy_timeout_ms: int = 5000) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        try:
            self._db = open_wal(self.path, SCHEMA, busy_timeout_ms=busy_timeout_ms)
        except (sqlite3.Error, OSError) as exc:
            raise ItemChangeError(f"cannot open the item change log {self.path}: {exc}") from exc

    def __repr__(self) -> str:
        return f"ItemChangeLog({str(self.path)!r})"

    def append(self, changes: Sequence[ItemChange], model_version: str) -> int:
        """Write ``changes`` in one transaction (all or none), fsynced when this returns;
        the log's new version (newest sequence number)."""
        now = time.time()
        rows = [
            (
                int(c.item_id),
                c.op,
                c.text,
                None if c.vector is None else np.asarray(c.vector, np.float32).tobytes(),
                model_version,
                now,
            )
            for c in changes
        ]
        self._insert(lambda _: rows, f"writing {len(rows)} item changes to")
        return self.version()

    def _insert(self, rows: Callable[[sqlite3.Connection], list[tuple]], what: str) -> int:
        """Insert the rows (item id, op, text, vector, model version, ts) that ``rows(db)``
        returns, computed and written in one write transaction (all or none); their count.
        ``what`` starts the error message (followed by the log's path)."""
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    got = rows(self._db)
                    self._db.executemany(
                        "INSERT INTO changes (item_id, op, text, vector, model_version, ts) "
                        "VALUES (?, ?, ?, ?, ?, ?)",
                        got,
                    )
                    self._db.execute("COMMIT")
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
            except sqlite3.Error as exc:
                raise ItemChangeError(f"{what} {self.path}: {exc}") from exc
        return len(got)

    def version(self) -> int:
        """The newest sequence number (0 for an empty log): it moves on every write."""
        with self._lock:
            try:
                got = self._db.execute("SELECT MAX(seq) FROM changes").fetchone()[0]
            except sqlite3.Error as exc:
                raise ItemChangeError(f"reading {self.path}: {exc}") from exc
        return int(got or 0)

    def _read(self, model_version: str) -> tuple[int, list[tuple], dict[tuple[int, str], bytes]]:
        """In one read transaction: the log's version, each item's latest change (item id,
        op, text, vector, model version, seq) and the vectors ``model_version`` embedded,
        keyed by (item id, text), the newest of each."""
        with self._lock:
            try:
                self._db.execute("BEGIN")
                try:
                    version = self._db.execute("SELECT MAX(seq) FROM changes").fetchone()[0]
                    rows = self._db.execute(LATEST).fetchall()
                    own = self._db.execute(UPSERTS_OF, (model_version,)).fetchall()
                finally:
                    self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                raise ItemChangeError(f"reading {self.path}: {exc}") from exc
        vectors = {(int(item_id), str(text)): blob for item_id, text, blob in own}
        return int(version or 0), rows, vectors

    def snapshot(self, model_version: str, dim: int) -> ItemDelta:
        """The delta the log describes now: each item's latest change, an upsert with the
        vector ``model_version`` embedded for its text (that change's own, or one
        :meth:`carry_forward` added); upserts with none, or of another dimension, are
        skipped with a warning."""
        version, rows, own = self._read(model_version)
        ids, vecs, deleted, texts = [], [], [], []
        skipped = 0
        for item_id, op, text, blob, version_of, _ in rows:
            if op == "delete":
                deleted.append(int(item_id))
                continue
            if version_of != model_version:
                blob = own.get((int(item_id), str(text)))
            vec = np.frombuffer(blob or b"", dtype=np.float32)
            if vec.size != dim:
                skipped += 1
                continue
            ids.append(int(item_id))
            vecs.append(vec)
            texts.append(str(text))
        if skipped:
            log.warning(
                "item changes: %d upserts of another model version or dimension skipped "
                "(model %s, dim %d): rebuild the index",
                skipped,
                model_version,
                dim,
            )
        return ItemDelta.build(
            np.asarray(ids, np.int64),
            np.asarray(vecs, np.float32).reshape(len(ids), dim),
            np.asarray(deleted, np.int64),
            texts=texts,
            version=version,
        )

    def carry_forward(
        self, model_version: str, embed: Callable[[list[str], np.ndarray], np.ndarray]
    ) -> int:
        """Embed, with ``embed`` (texts and their item ids -> vectors ``[n, D]``: the item
        tower of ``model_version``), every item whose latest change is an upsert without a
        vector of ``model_version`` for its text, and append those vectors as changes of
        ``model_version`` (same op and text): the delta of that model then serves them. An
        item changed again while this embedded keeps its newer change (its row is not
        written). Returns the number of changes appended."""
        _, rows, own = self._read(model_version)
        pending = [
            (int(seq), int(item_id), str(op), str(text))
            for item_id, op, text, _, version_of, seq in rows
            if op != "delete"
            and version_of != model_version
            and (int(item_id), str(text)) not in own
        ]
        if not pending:
            return 0
        vectors = np.ascontiguousarray(
            embed([p[3] for p in pending], np.asarray([p[1] for p in pending], np.int64)),
            dtype=np.float32,
        )
        faiss.normalize_L2(vectors)
        now = time.time()

        def unchanged(db: sqlite3.Connection) -> list[tuple]:
            newest = dict(db.execute("SELECT item_id, MAX(seq) FROM changes GROUP BY item_id"))
            return [
                (item_id, op, text, vec.tobytes(), model_version, now)
                for (seq, item_id, op, text), vec in zip(pending, vectors, strict=True)
                if newest.get(item_id) == seq
            ]

        carried = self._insert(unchanged, "carrying item changes forward in")
        log.info(
            "item changes: %d upserts re-embedded by model %s (%d changed meanwhile)",
            carried,
            model_version,
            len(pending) - carried,
        )
        return carried

    def close(self) -> None:
        with self._lock:
            self._db.close()


@dataclass
class ItemDelta:
    """Items changed since the main index was built: ``ids`` int64 ``[U]`` upserted with
    ``index`` (exact inner product over their vectors), ``texts`` their texts, ``deleted``
    int64 ``[R]`` (sorted) never returned; ``version`` the log version it reflects."""

    ids: np.ndarray
    index: faiss.Index
    deleted: np.ndarray
    texts: list[str] = field(default_factory=list)
    version: int = 0

    @classmethod
    def build(
        cls,
        ids: np.ndarray,
        vectors: np.ndarray,
        deleted: np.ndarray,
        *,
        texts: Sequence[str] = (),
        version: int = 0,
    ) -> ItemDelta:
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        index = faiss.IndexIDMap(faiss.IndexFlatIP(int(vectors.shape[1])))
        if len(ids):
            index.add_with_ids(vectors, np.asarray(ids, np.int64))
        return cls(
            np.asarray(ids, np.int64),
            index,
            np.unique(np.asarray(deleted, np.int64)),
            list(texts),
            version,
        )

    @classmethod
    def empty(cls, dim: int) -> ItemDelta:
        return cls.build(np.zeros(0, np.int64), np.zeros((0, dim), np.float32), np.zeros(0))

    def __len__(self) -> int:
        return len(self.ids) + len(self.deleted)

    @property
    def hidden(self) -> np.ndarray:
        """Ids whose main-index entries must not be returned: deleted or superseded."""
        return np.union1d(self.deleted, self.ids)

    def search(self, vec: np.ndarray, depth: int) -> tuple[np.ndarray, np.ndarray]:
        """``(ids, scores)`` of the best ``depth`` upserted items for ``vec`` ``[1, D]``."""
        n = min(depth, len(self.ids))
        if n == 0:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        scores, ids = self.index.search(vec, n)
        keep = ids[0] >= 0
        return ids[0][keep].astype(np.int64), scores[0][keep].astype(np.float32)

    def merge(
        self,
        main_ids: np.ndarray,
        main_scores: np.ndarray,
        delta_ids: np.ndarray,
        delta_scores: np.ndarray,
        depth: int,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Main-index hits minus :attr:`hidden`, merged with the delta's by score (best
        first, ties: main first), at most ``depth``."""
        keep = ~np.isin(main_ids, self.hidden)
        ids = np.concatenate([main_ids[keep], delta_ids]).astype(np.int64)
        scores = np.concatenate([main_scores[keep], delta_scores]).astype(np.float32)
        order = np.argsort(-scores, kind="stable")[:depth]
        return ids[order], scores[order]


class DeltaWatcher:
    """The current :class:`ItemDelta` of a change log, re-read when its version moved, at
    most every ``poll_s`` seconds (``clock`` in seconds)."""

    def __init__(
        self,
        changes: ItemChangeLog,
        *,
        model_version: str,
        dim: int,
        poll_s: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if poll_s < 0:
            raise ValueError(f"poll_s must be >= 0, got {poll_s}")
        self.changes = changes
        self.model_version = model_version
        self.dim = dim
        self.poll_s = poll_s
        self.clock = clock
        self.delta = ItemDelta.empty(dim)
        self._checked = -float("inf")
        self._lock = threading.Lock()

    def current(self) -> ItemDelta:
        """The delta, refreshed when ``poll_s`` passed and the log moved. A failing read
        keeps the previous delta (logged)."""
        now = self.clock()
        if now - self._checked < self.poll_s:
            return self.delta
        with self._lock:
            if now - self._checked < self.poll_s:
                return self.delta
            self._checked = now
            try:
                if self.changes.version() != self.delta.version:
                    self.delta = self.changes.snapshot(self.model_version, self.dim)
                    log.info(
                        "item changes: delta at version %d: %d upserted, %d deleted",
                        self.delta.version,
                        len(self.delta.ids),
                        len(self.delta.deleted),
                    )
            except ItemChangeError:
                log.exception("item changes: keeping the delta at version %d", self.delta.version)
        return self.delta


class ChangeChecker:
    """Checks a batch of changes against the catalog: ``base_ids`` the items of the main
    index (minus its removed ids) and the log's current delta. A batch is refused whole,
    with every problem listed, when any change is bad:

    * an op not in :data:`OPS`; a negative id; the same id twice in the batch;
    * ``add`` of an item that exists, ``update`` or ``delete`` of one that does not;
    * ``add``/``update`` with an empty (or whitespace) text;
    * more than :data:`MAX_BATCH` changes.
    """

    def __init__(self, base_ids: np.ndarray, watcher: DeltaWatcher) -> None:
        self.base = np.unique(np.asarray(base_ids, np.int64))
        self.watcher = watcher

    def exists(self, ids: np.ndarray) -> np.ndarray:
        """Whether each id is served now (main index or upserted, and not deleted)."""
        delta = self.watcher.current()
        ids = np.asarray(ids, np.int64)
        in_base = np.isin(ids, self.base) & ~np.isin(ids, delta.deleted)
        return in_base | np.isin(ids, delta.ids)

    def problems(self, ids: Sequence[int], ops: Sequence[str], texts: Sequence[str]) -> list[str]:
        if len(ids) > MAX_BATCH:
            return [f"{len(ids)} changes in one request; at most {MAX_BATCH}: split the batch"]
        exists = self.exists(np.asarray(ids, np.int64))
        seen: set[int] = set()
        out = []
        for i, (item, op, text) in enumerate(zip(ids, ops, texts)):
            where = f"change {i} ({op} item {item})"
            if op not in OPS:
                out.append(f"change {i}: op {op!r} is not one of {', '.join(OPS)}")
                continue
            if item < 0:
                out.append(f"{where}: item ids must be >= 0")
            if item in seen:
                out.append(f"{where}: item {item} appears more than once in this request")
            seen.add(item)
            if op == "add" and exists[i]:
                out.append(f"{where}: item {item} already exists (use update)")
            if op in ("update", "delete") and not exists[i]:
                out.append(f"{where}: item {item} is not in the catalog")
            if op != "delete" and not text.strip():
                out.append(f"{where}: the text is empty (an item needs a text to embed)")
        return out

    def check(self, ids: Sequence[int], ops: Sequence[str], texts: Sequence[str]) -> None:
        """Raise :class:`RequestError` listing the problems (up to 5) when any change is bad."""
        if not (len(ids) == len(ops) == len(texts)):
            raise RequestError(
                f"ITEM_IDS, OPS and ITEM_TEXTS need one entry per change; got {len(ids)}, "
                f"{len(ops)} and {len(texts)}"
            )
        if not ids:
            raise RequestError("no changes in this request (ITEM_IDS is empty)")
        bad = self.problems(ids, ops, texts)
        if bad:
            more = f"; and {len(bad) - 5} more" if len(bad) > 5 else ""
            raise RequestError(
                f"refused all {len(ids)} changes of this request (none applied): "
                f"{'; '.join(bad[:5])}{more}"
            )


class CatalogStage:
    """The ``catalog`` model's logic: check a batch (:class:`ChangeChecker`), embed the
    upserted texts with ``embed`` (texts and their item ids int64 ``[n]`` -> float32
    ``[n, D]``: the served item tower, which combines an id the model learned a vector for
    with the text, so an updated item keeps its identity), append the batch to ``changes``
    (fsynced) and answer with the log's new version."""

    def __init__(
        self,
        changes: ItemChangeLog,
        checker: ChangeChecker,
        embed: Callable[[list[str], np.ndarray], np.ndarray],
        *,
        model_version: str,
    ) -> None:
        self.changes = changes
        self.checker = checker
        self.embed = embed
        self.model_version = model_version

    def apply(self, ids: Sequence[int], ops: Sequence[str], texts: Sequence[str]) -> int:
        """Check, embed and log one batch (all or none); the log's new version."""
        self.checker.check(ids, ops, texts)
        texts = [t.strip()[:MAX_TEXT_CHARS] for t in texts]
        upserts = [i for i, op in enumerate(ops) if op != "delete"]
        vectors = np.zeros((0, self.checker.watcher.dim), np.float32)
        if upserts:
            up_ids = np.asarray([ids[i] for i in upserts], np.int64)
            vectors = self.embed([texts[i] for i in upserts], up_ids)
            vectors = np.ascontiguousarray(vectors, np.float32)
            faiss.normalize_L2(vectors)
        by_row = dict(zip(upserts, vectors))
        batch = [
            ItemChange(int(item), op, "" if op == "delete" else texts[i], by_row.get(i))
            for i, (item, op) in enumerate(zip(ids, ops))
        ]
        version = self.changes.append(batch, self.model_version)
        log.info("item changes: applied %d (log version %d)", len(batch), version)
        return version

    def infer(self, tensors: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Triton tensors ``ITEM_IDS`` int64 ``[n]``, ``OPS`` and ``ITEM_TEXTS`` BYTES ``[n]``
        (empty text for a delete) -> ``N_APPLIED`` and ``VERSION`` int64 ``[1]``."""
        ids = int_vector(require(tensors, "ITEM_IDS"), "ITEM_IDS")
        ops = decode_texts(require(tensors, "OPS"), "OPS")
        texts = decode_texts(require(tensors, "ITEM_TEXTS"), "ITEM_TEXTS")
        version = self.apply(ids.tolist(), ops, texts)
        return {
            "N_APPLIED": np.array([len(ids)], np.int64),
            "VERSION": np.array([version], np.int64),
        }

    def warm_up(self) -> None:
        """Embed one text and read the log's version; nothing is written."""
        self.embed(["red cotton shirt"], np.full(1, -1, np.int64))
        self.checker.watcher.current()


def log_path(folder: Path, params: Mapping[str, str]) -> Path:
    """The change log a model's ``params`` name (``items_path``; empty: :func:`default_path`
    of the repository, ``folder``'s grandparent)."""
    text = params.get("items_path", "").strip()
    return Path(text) if text else default_path(Path(folder).resolve().parent.parent)


def watcher_for(folder: Path, params: Mapping[str, str], *, dim: int) -> DeltaWatcher:
    """The :class:`DeltaWatcher` of a model's version folder and ``params`` (``items_poll_s``,
    default 0.5 s; ``model_version``)."""
    poll_s = float_parameter(params, "items_poll_s", 0.5)
    return DeltaWatcher(
        ItemChangeLog(log_path(folder, params)),
        model_version=params.get("model_version", ""),
        dim=dim,
        poll_s=poll_s,
    )


def optional_watcher(folder: Path, params: Mapping[str, str], *, dim: int) -> DeltaWatcher | None:
    """:func:`watcher_for`, or ``None`` (logged as an error) when the change log cannot be
    opened (e.g. a read-only folder): the model then serves its bundle as built."""
    try:
        return watcher_for(folder, params, dim=dim)
    except ItemChangeError:
        log.exception("item changes are off for %s: the change log cannot be opened", folder)
        return None


def catalog_stage(folder: Path, params: Mapping[str, str]) -> CatalogStage:
    """The ``catalog`` stage of version folder ``folder`` (``item_ids.npy``, optional
    ``removed_ids.npy``, the item tower) with its model ``params``."""
    folder = Path(folder)
    check_model_version(load_manifest(folder), params.get("model_version"), f"{folder}")
    # as serving.stage_params.item_encoder (which this module cannot import: the retriever
    # imports this module and stage_params the retriever)
    encoder = ItemEncoder.from_dir(
        folder,
        model_version=params.get("model_version"),
        runtime=runtime_from_params(params, int_parameter(params, "intra_op_threads", 1)),
    )
    base = np.load(folder / ITEM_IDS_FILE).astype(np.int64)
    removed_path = folder / REMOVED_IDS_FILE
    if removed_path.is_file():
        base = np.setdiff1d(base, np.load(removed_path).astype(np.int64))
    dim = int(np.asarray(encoder.embed(["red cotton shirt"])).shape[1])
    watcher = watcher_for(folder, params, dim=dim)
    watcher.poll_s = 0.0  # checks read the log's latest state: an add then a delete works
    return CatalogStage(
        watcher.changes,
        ChangeChecker(base, watcher),
        encoder.embed,
        model_version=params.get("model_version", ""),
    )


class PaddedLexical(LexicalIndex):
    """The bundle's BM25 index over more rows than it was built on: rows past its own (items
    added while serving) score 0 (their lexical feature waits for the next rebuild)."""

    def __init__(self, base: LexicalIndex, n_total: int) -> None:
        self.bm25 = base.bm25
        self.base_items = base.n_items
        self.n_items = max(n_total, base.n_items)

    def all_scores(self, query: str) -> np.ndarray:
        scores = super().all_scores(query)  # [base rows], or zeros [n_items] for no word
        out = np.zeros(self.n_items, dtype=np.float32)
        out[: len(scores)] = scores
        return out


def texts_with_delta(base: ItemTexts, delta: ItemDelta, tokenizer: Tokenizer) -> ItemTexts:
    """``base`` plus the rows of ``delta``'s upserts, appended (tokens as the bundle's:
    towers.text.item_token_lists; title: the text's first :data:`TITLE_CHARS` characters;
    popularity 0). An updated item's old row stays where it is under an id no request uses
    (``-1 - row``), so the rows of ``base`` keep their numbers (the lexical index is by row).
    Deleted items keep their rows: the retriever never returns them."""
    if len(delta.ids) == 0:
        return base
    ids = base.rows.item_ids.copy()
    superseded = np.isin(ids, delta.ids)
    ids[superseded] = -1 - np.flatnonzero(superseded)
    tokens = item_token_lists(tokenizer, delta.texts)
    lengths = np.array([len(t) for t in tokens], np.int64)
    offsets = np.concatenate([base.offsets, base.offsets[-1] + np.cumsum(lengths)])
    return ItemTexts(
        np.concatenate([ids, delta.ids]),
        offsets,
        np.concatenate([base.tokens, *[t.astype(np.int64) for t in tokens]]),
        [*base.titles, *(t[:TITLE_CHARS] for t in delta.texts)],
        np.concatenate([base.popularity, np.zeros(len(delta.ids), np.float32)]),
    )


class RerankerDelta:
    """Keeps a reranker's item tables (and lexical index) in step with the change log, so
    the items the retriever finds in the delta are scored and answered with their titles.
    :meth:`refresh` before each batch of requests: cheap unless the log moved."""

    def __init__(
        self, reranker: Reranker, watcher: DeltaWatcher | None, tokenizer: Tokenizer
    ) -> None:
        self.reranker = reranker
        self.watcher = watcher
        self.tokenizer = tokenizer
        self.base = reranker.items
        self.base_lexical = reranker.lexical
        self.version = 0

    @classmethod
    def attach(cls, reranker: Reranker, folder: Path, params: Mapping[str, str]) -> RerankerDelta:
        """For the reranker of version folder ``folder`` (its manifest's dimension, its
        ``tokenizer.json``) and model ``params``."""
        dim = load_manifest(Path(folder)).dim
        tokenizer = load_tokenizer(Path(folder) / TOKENIZER_FILE)
        return cls(reranker, optional_watcher(folder, params, dim=dim), tokenizer)

    def refresh(self) -> None:
        if self.watcher is None:
            return
        delta = self.watcher.current()
        if delta.version == self.version:
            return
        try:
            items = texts_with_delta(self.base, delta, self.tokenizer)
        except Exception:  # keep serving the tables we have
            log.exception("item changes: reranker tables kept at version %d", self.version)
            return
        self.reranker.items = items
        if self.base_lexical is not None:
            self.reranker.lexical = PaddedLexical(self.base_lexical, len(items.rows))
        self.version = delta.version
