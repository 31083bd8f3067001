"""The bundle contract: file names, the manifest, checksums and the blend, defined once.

One trained model version travels as a *bundle* (one flat folder written by
``export/bundle.py``, laid out per Triton model by ``export/repository.py``) made from an
*artifacts* folder (written by ``towerserve train``). This module is the only place that
spells their file names, the only definition of ``manifest.json`` (one typed class,
:class:`Manifest`, used to write it in export and to read it in every serving stage), and the
only definition of the reranker's blend (:data:`BLEND_FEATURES` and the arithmetic
:meth:`Blend.score`) that training fits, evaluation measures and the served reranker applies.
So a change to the bundle or the blend is made here once, and evaluation cannot drift from
what is served.

Where it lives, and why. It imports only the standard library and numpy (the import contract
in ``pyproject.toml`` checks it): the serving stages run inside Triton's Python stubs and must
not import torch, transformers, ``export`` or ``client``; ``export`` must not import
``serving``. The lowest package that training, evaluation, export and serving may all import
is ``towers`` (the serving stages already read its numpy-only modules ``towers.features`` and
``towers.lexical``), so the contract sits at ``towers/bundle_contract.py`` and nothing here
may import another ``towers`` module.

Compatibility: bundles and artifacts written before the lexical feature hold a blend of three
features (``rerank``, ``retrieval``, ``popularity``); they read as the four-feature blend with
lexical weight 0. Manifests without ``max_k``, ``n_candidates``, ``prior`` or ``checksums`` read
with the defaults below.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

__all__ = [
    "USER_HISTORY_HEAD_FILE",
    "USER_HISTORY_SEQUENCE_FILE",
    "ARTIFACTS_BUNDLE_DIR",
    "BLEND_FEATURES",
    "BLEND_FILE",
    "INDEX_FILE",
    "ITEM_EMBEDDINGS_FILE",
    "ITEM_IDS_FILE",
    "ITEM_TITLES_FILE",
    "ITEM_TOKENS_FILE",
    "LEGACY_BLEND_FEATURES",
    "LEXICAL_FILES",
    "MANIFEST_FILE",
    "ONNX_GRAPHS",
    "context_once_file",
    "int8_files",
    "tensorrt_file",
    "torch_program_file",
    "POPULARITY_FILE",
    "PRIOR_BUNDLE_FILE",
    "COVISIT_FILE",
    "PRIOR_META_FILE",
    "PRIOR_VALUES_FILE",
    "REMOVED_IDS_FILE",
    "TEACHER_ITEM_EMBEDDINGS_FILE",
    "TOKENIZER_FILE",
    "TRAIN_REPORT_FILE",
    "TRITON_DTYPES",
    "USER_HISTORY_FILE",
    "Blend",
    "BundleError",
    "ItemIdTable",
    "Manifest",
    "check_model_version",
    "checksums",
    "combine_item_vectors",
    "load_manifest",
    "onnx_data_file",
    "onnx_file",
    "sha256",
    "verify_files",
    "BAD_ROWS_FILE",
    "DELETED_IDS_FILE",
    "EMBED_MANIFEST_FILE",
    "EMBED_STATE_FILE",
    "INDEX_MANIFEST_FILE",
    "embed_shard_file",
]

# -- bundle files (one flat folder; each Triton model's version folder holds a subset) ------

#: The manifest (:class:`Manifest`) of a bundle or model version folder.
MANIFEST_FILE = "manifest.json"
#: FAISS index of the item vectors under their item ids (inner product).
INDEX_FILE = "index.faiss"
#: The reranker's blend (:class:`Blend`); also in the artifacts folder.
BLEND_FILE = "blend.json"
#: Key in ``BLEND_FILE`` of the blend for requests without a query (recommendations;
#: towers/no_query_blend.py). A file without it: the search blend serves them too.
NO_QUERY_BLEND_KEY = "no_query"
#: Item ids int64 ``[N]`` in items-table order: the row order of every per-item table.
ITEM_IDS_FILE = "item_ids.npy"
#: Item-tower vectors float32 ``[N, D]``, rows as ``ITEM_IDS_FILE``; also in the artifacts.
ITEM_EMBEDDINGS_FILE = "item_embeddings.npy"
#: Pre-tokenized item text: ``item_ids`` int64 ``[N]``, ``offsets`` int64 ``[N+1]``,
#: ``tokens`` int32 ``[T]`` (WordPiece ids, no special tokens).
ITEM_TOKENS_FILE = "item_tokens.npz"
#: Item titles, a JSON list of ``N`` strings.
ITEM_TITLES_FILE = "item_titles.json"
#: Item popularity float32 ``[N]`` (the blend's ``popularity`` feature).
POPULARITY_FILE = "popularity.npy"
#: The retriever's popularity prior by item id: ``item_ids`` int64 ``[N]``, ``values``
#: float32 ``[N]`` (optional; its weight and default are in the manifest's ``prior``) and,
#: for the prior that moves with live events, ``counts`` float64 ``[N]``: the raw decayed
#: counts as of the manifest's ``prior.at_ts`` (with ``prior.mean``/``prior.std``, the
#: standardisation of ``log1p(counts)``; bundles without them keep a frozen prior).
PRIOR_BUNDLE_FILE = "item_prior.npz"
#: The retriever's co-visitation table (towers/covisit.py): each item's collaborative
#: neighbours, with the kind and the fitted weight; optional (older bundles lack it).
COVISIT_FILE = "item_covisit.npz"
#: Item ids the retriever never returns, int64 ``[R]`` (optional, may be added after export).
REMOVED_IDS_FILE = "removed_ids.npy"
#: Stored user histories: ``user_ids``, ``offsets``, ``item_ids``, ``ts`` (unix s).
USER_HISTORY_FILE = "user_history.npz"
#: The user tower's history head, float32 ``[D, D]``: for an empty query the user vector is
#: ``normalize(pooled @ head)`` (towers.models.UserTower.history_head), which the served stage
#: computes without running the graph (optional; older bundles lack it).
USER_HISTORY_HEAD_FILE = "user_history_head.npy"
#: The user tower's sequence block (towers.models.HistorySequence.arrays, float32 arrays and
#: ``heads``): for an empty query the user vector is ``normalize(pooled @ head + seq)`` with
#: ``seq`` computed by towers.history_sequence (optional: towers without the block, and
#: older bundles, lack it).
USER_HISTORY_SEQUENCE_FILE = "user_history_sequence.npz"
#: The teacher's fast tokenizer (uncased BERT WordPiece).
TOKENIZER_FILE = "tokenizer.json"
#: The lexical (BM25) index: the files ``towers.lexical.LexicalIndex.save`` writes
#: (bm25s's own names; optional, the reranker's lexical feature is 0 without them).
LEXICAL_FILES = (
    "params.index.json",
    "vocab.index.json",
    "data.csc.index.npy",
    "indices.csc.index.npy",
    "indptr.csc.index.npy",
)
#: The ONNX graphs of a bundle, each ``<name>.onnx`` (see :func:`onnx_file`).
ONNX_GRAPHS = ("item_tower", "user_tower", "reranker")

# -- artifacts folder (``towerserve train``) -------------------------------------------------

#: Settings, losses, timings and the ``model_version`` of one training run.
TRAIN_REPORT_FILE = "train_report.json"
#: The teacher's item vectors float32 ``[N, 384]`` (evaluation only).
TEACHER_ITEM_EMBEDDINGS_FILE = "teacher_item_embeddings.npy"
#: The popularity prior's values float32 ``[N]`` in items-table order, and its metadata.
PRIOR_VALUES_FILE = "item_prior.npy"
PRIOR_META_FILE = "prior.json"
#: Where ``towerserve export`` puts the bundle inside the artifacts folder.
ARTIFACTS_BUNDLE_DIR = "bundle"

#: Triton ``TYPE_*`` names to numpy dtypes (as in ``triton_python_backend_utils``): the model
#: configs the repository writer fills and the stages read agree through this table.
TRITON_DTYPES: dict[str, type] = {
    "TYPE_BOOL": np.bool_,
    "TYPE_UINT8": np.uint8,
    "TYPE_UINT16": np.uint16,
    "TYPE_UINT32": np.uint32,
    "TYPE_UINT64": np.uint64,
    "TYPE_INT8": np.int8,
    "TYPE_INT16": np.int16,
    "TYPE_INT32": np.int32,
    "TYPE_INT64": np.int64,
    "TYPE_FP16": np.float16,
    "TYPE_FP32": np.float32,
    "TYPE_FP64": np.float64,
    "TYPE_STRING": np.object_,
}


def onnx_file(graph: str) -> str:
    """File name of the ONNX graph ``graph`` (one of :data:`ONNX_GRAPHS`)."""
    if graph not in ONNX_GRAPHS:
        raise ValueError(f"unknown ONNX graph {graph!r}: allowed {ONNX_GRAPHS}")
    return f"{graph}.onnx"


def torch_program_file(graph: str) -> str:
    """File name of the ``torch.export`` program of ``graph`` (GPU serving; optional)."""
    if graph not in ONNX_GRAPHS:
        raise ValueError(f"unknown graph {graph!r}: allowed {ONNX_GRAPHS}")
    return f"{graph}.pt2"


def tensorrt_file(graph: str) -> str:
    """File name of the TensorRT engine of ``graph`` (GPU serving; optional)."""
    if graph not in ONNX_GRAPHS:
        raise ValueError(f"unknown graph {graph!r}: allowed {ONNX_GRAPHS}")
    return f"{graph}.plan"


def context_once_file(graph: str) -> str:
    """File name of the context-once ONNX form of ``graph`` (``reranker`` only; written for a
    1-layer cross-encoder, served by the CPU runtimes; optional: export/onnx.py)."""
    if graph != "reranker":
        raise ValueError(f"only the reranker has a context-once form, not {graph!r}")
    return f"{graph}.context_once.onnx"


def int8_files(graph: str) -> tuple[str, str]:
    """File names (``.xml`` graph, ``.bin`` weights) of the int8 OpenVINO form of ``graph``
    (CPU serving; optional; client/int8_export.py)."""
    if graph not in ONNX_GRAPHS:
        raise ValueError(f"unknown graph {graph!r}: allowed {ONNX_GRAPHS}")
    return f"{graph}.int8.xml", f"{graph}.int8.bin"


def onnx_data_file(onnx_name: str) -> str:
    """The external-weights side file torch's exporter may write next to ``onnx_name``."""
    return f"{onnx_name}.data"


class BundleError(RuntimeError):
    """A bundle or version folder is incomplete, corrupt, or from another model version."""


# -- manifest --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Manifest:
    """What ``manifest.json`` says about one model version (written by export, read by every
    serving stage and by evaluation).

    ``dim`` is the embedding dimension D, ``n_items`` the catalog size N, ``created_at`` an ISO
    8601 UTC time, ``index`` the FAISS index kind and parameters (``nprobe``, ``efSearch``,
    ``k_factor``: towers/index.py),
    ``recency_tau_s`` the decay constant of history weights in seconds, ``max_k`` the largest
    number of items one request may ask for, ``n_candidates`` how many candidates the retriever
    hands to the reranker (it searches ``max(n_candidates, K)``), ``checksums`` the sha256 hex
    digest per file name, ``prior`` the retriever's popularity prior (``towers/prior.py``:
    weight, default, at_ts, half_life_s; empty without one), ``onnx_parity_max_abs_diff`` the
    ONNX-vs-PyTorch check per graph and ``embedding_precision`` ``"bf16"`` or ``"fp32"``.
    """

    model_version: str
    dim: int
    n_items: int
    created_at: str
    index: dict[str, Any]
    recency_tau_s: float
    max_k: int = 100
    n_candidates: int = 100
    checksums: dict[str, str] = field(default_factory=dict)
    prior: dict[str, float] = field(default_factory=dict)
    onnx_parity_max_abs_diff: dict[str, float] = field(default_factory=dict)
    embedding_precision: str = ""

    def __post_init__(self) -> None:
        if self.dim < 1 or self.n_items < 0 or self.max_k < 1:
            raise BundleError(
                f"dim must be >= 1, n_items >= 0 and max_k >= 1, got dim "
                f"{self.dim}, n_items {self.n_items}, max_k {self.max_k}"
            )
        if self.n_candidates < 1 or not self.recency_tau_s > 0:
            raise BundleError(
                f"n_candidates must be >= 1 and recency_tau_s > 0, got "
                f"{self.n_candidates} and {self.recency_tau_s}"
            )

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any], source: str = MANIFEST_FILE) -> Manifest:
        """Parse a manifest document; raises :class:`BundleError` naming ``source``."""
        required = ("model_version", "dim", "n_items", "index", "recency_tau_s")
        missing = [k for k in required if k not in doc]
        if missing:
            raise BundleError(f"{source} lacks {', '.join(missing)}")
        try:
            return cls(
                model_version=str(doc["model_version"]),
                dim=int(doc["dim"]),
                n_items=int(doc["n_items"]),
                created_at=str(doc.get("created_at", "")),
                index=dict(doc["index"]),
                recency_tau_s=float(doc["recency_tau_s"]),
                max_k=int(doc.get("max_k", 100)),
                n_candidates=int(doc.get("n_candidates", 100)),
                checksums={str(k): str(v) for k, v in dict(doc.get("checksums") or {}).items()},
                prior={str(k): float(v) for k, v in dict(doc.get("prior") or {}).items()},
                onnx_parity_max_abs_diff={
                    str(k): float(v)
                    for k, v in dict(doc.get("onnx_parity_max_abs_diff") or {}).items()
                },
                embedding_precision=str(doc.get("embedding_precision", "")),
            )
        except BundleError as exc:
            raise BundleError(f"{source}: {exc}") from exc
        except (TypeError, ValueError) as exc:
            raise BundleError(f"{source} has a field of the wrong type: {exc}") from exc

    def to_dict(self) -> dict[str, Any]:
        """The JSON document (``from_dict(to_dict())`` gives an equal manifest)."""
        return asdict(self)

    def write(self, folder: Path) -> Path:
        """Write ``folder/manifest.json`` (to a temporary name, then renamed into place)."""
        path = Path(folder) / MANIFEST_FILE
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=2))
        os.replace(tmp, path)
        return path


def load_manifest(folder: Path) -> Manifest:
    """The manifest of a bundle or version folder; raises :class:`BundleError` naming the file."""
    path = Path(folder) / MANIFEST_FILE
    if not path.is_file():
        raise BundleError(f"{path} is missing: not a bundle or model version folder")
    try:
        doc = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"{path} is not readable JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise BundleError(f"{path} must hold a JSON object")
    return Manifest.from_dict(doc, source=str(path))


def check_model_version(manifest: Manifest, expected: str | None, what: str) -> None:
    """Refuse files of another model version than the one ``what`` was configured with.

    ``expected`` ``None`` or empty skips the check (a model configured without a version).
    """
    if expected and manifest.model_version != expected:
        raise BundleError(
            f"{what} was built by model version {manifest.model_version!r}, but this model is "
            f"configured for version {expected!r}: rebuild the repository with "
            "export.repository.write_repository from one bundle"
        )


# -- checksums -------------------------------------------------------------------------------


def sha256(path: Path) -> str:
    """Hex sha256 digest of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def checksums(folder: Path) -> dict[str, str]:
    """sha256 of every plain file directly in ``folder`` (the manifest itself excluded), by
    name, in name order: what :attr:`Manifest.checksums` holds."""
    return {
        p.name: sha256(p)
        for p in sorted(Path(folder).iterdir())
        if p.is_file() and p.name != MANIFEST_FILE
    }


def verify_files(folder: Path, manifest: Manifest, names: Iterable[str]) -> None:
    """Check that each of ``names`` exists in ``folder`` and matches its manifest checksum.

    Raises :class:`BundleError` naming the first missing file, a file the manifest has no
    checksum for, or a file whose content differs from its checksum.
    """
    for name in names:
        path = Path(folder) / name
        if not path.is_file():
            raise BundleError(f"{path} is missing from the bundle")
        expected = manifest.checksums.get(name)
        if expected is None:
            raise BundleError(f"{path} has no checksum in {MANIFEST_FILE}: rebuild the bundle")
        got = sha256(path)
        if got != expected:
            raise BundleError(
                f"{path} does not match its checksum in {MANIFEST_FILE} (expected "
                f"{expected[:12]}..., got {got[:12]}...): the file is corrupt or from another "
                "bundle"
            )


# -- the blend -------------------------------------------------------------------------------

#: Feature order the blend weights refer to: the cross-encoder logit, the retrieval inner
#: product, the item's popularity, and the BM25 score of the query against the item text (0
#: for an empty query or without a lexical index).
BLEND_FEATURES = ("rerank", "retrieval", "popularity", "lexical")
#: Blends written before the lexical feature existed: its weight reads as 0.
LEGACY_BLEND_FEATURES = BLEND_FEATURES[:3]


@dataclass(frozen=True)
class Blend:
    """The learned linear blend ("ensemble") of the reranker's signals:
    ``score = bias + weights . [rerank, retrieval, popularity, lexical]``, float32.

    Training fits it (:func:`blend_features` then least squares), evaluation and the served
    reranker apply it with :meth:`score`; all three build the features the same way.
    """

    weights: np.ndarray  # float32 [len(BLEND_FEATURES)]
    bias: float

    def __post_init__(self) -> None:
        weights = np.asarray(self.weights, dtype=np.float32).reshape(-1)
        if len(weights) != len(BLEND_FEATURES) or not np.isfinite(weights).all():
            raise BundleError(
                f"a blend needs {len(BLEND_FEATURES)} finite weights ({list(BLEND_FEATURES)}), "
                f"got {weights.tolist()}"
            )
        object.__setattr__(self, "weights", weights)
        object.__setattr__(self, "bias", float(self.bias))

    @classmethod
    def rerank_only(cls) -> Blend:
        """The cross-encoder logit alone (the fallback when no blend could be fitted)."""
        return cls(np.array([1.0, 0.0, 0.0, 0.0], dtype=np.float32), 0.0)

    @classmethod
    def retrieval_only(cls) -> Blend:
        """The retrieval score alone: the candidates keep the retriever's order."""
        return cls(np.array([0.0, 1.0, 0.0, 0.0], dtype=np.float32), 0.0)

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any], source: str = BLEND_FILE) -> Blend:
        """Parse a blend document; a legacy three-feature blend gets lexical weight 0.
        Raises :class:`BundleError` naming ``source``."""
        features = tuple(doc.get("features", ()))
        weights = list(doc.get("weights", ()))
        if features == LEGACY_BLEND_FEATURES and len(weights) == len(features):
            features, weights = BLEND_FEATURES, [*weights, 0.0]
        if features != BLEND_FEATURES or len(weights) != len(BLEND_FEATURES):
            raise BundleError(
                f"{source}: features must be {list(BLEND_FEATURES)} with one weight each, got "
                f"{list(features)} and {doc.get('weights')}"
            )
        try:
            return cls(np.asarray(weights, dtype=np.float32), float(doc["bias"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise BundleError(f"{source}: bad weights or bias: {exc!r}") from exc

    @classmethod
    def from_json(cls, path: Path) -> Blend:
        """Read a ``blend.json`` file's blend (see :meth:`from_dict`)."""
        return cls.from_dict(_blend_doc(path), source=str(path))

    @classmethod
    def no_query_from_json(cls, path: Path) -> Blend | None:
        """The blend for requests without a query in a ``blend.json`` file
        (``NO_QUERY_BLEND_KEY``), or ``None`` when it has none (written before it existed:
        the search blend serves those requests too)."""
        doc = _blend_doc(path).get(NO_QUERY_BLEND_KEY)
        if doc is None:
            return None
        if not isinstance(doc, dict):
            raise BundleError(f"{path}: {NO_QUERY_BLEND_KEY} must be a JSON object")
        return cls.from_dict(doc, source=f"{path} ({NO_QUERY_BLEND_KEY})")

    def to_dict(self) -> dict[str, Any]:
        """The JSON document: ``features``, ``weights``, ``bias``."""
        return {
            "features": list(BLEND_FEATURES),
            "weights": [float(w) for w in self.weights],
            "bias": self.bias,
        }

    def write(self, folder: Path, no_query: Blend | None = None) -> Path:
        """Write ``folder/blend.json``: this blend and, when given, the blend for requests
        without a query under ``NO_QUERY_BLEND_KEY``."""
        doc = self.to_dict()
        if no_query is not None:
            doc[NO_QUERY_BLEND_KEY] = no_query.to_dict()
        path = Path(folder) / BLEND_FILE
        path.write_text(json.dumps(doc, indent=2))
        return path

    @property
    def uses_rerank(self) -> bool:
        """Whether the cross-encoder logit has a weight (else candidates need no scoring)."""
        return bool(self.weights[BLEND_FEATURES.index("rerank")] != 0)

    @property
    def uses_lexical(self) -> bool:
        """Whether the lexical feature has a weight (else it need not be computed)."""
        return bool(self.weights[BLEND_FEATURES.index("lexical")] != 0)

    def score(
        self,
        rerank: np.ndarray,
        retrieval: np.ndarray,
        popularity: np.ndarray,
        lexical: np.ndarray | None = None,
    ) -> np.ndarray:
        """Blended scores, float32 ``[n]``, of ``n`` candidates' features (each ``[n]``;
        ``lexical`` None: all 0)."""
        feats = blend_features(rerank, retrieval, popularity, lexical)
        return (feats @ self.weights + np.float32(self.bias)).astype(np.float32)


def _blend_doc(path: Path) -> dict[str, Any]:
    """The JSON object of a ``blend.json`` file; :class:`BundleError` naming it otherwise."""
    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"{path} is not readable JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise BundleError(f"{path} must hold a JSON object")
    return doc


def blend_features(
    rerank: np.ndarray,
    retrieval: np.ndarray,
    popularity: np.ndarray,
    lexical: np.ndarray | None = None,
) -> np.ndarray:
    """The blend's feature matrix float32 ``[n, len(BLEND_FEATURES)]`` in
    :data:`BLEND_FEATURES` order (``lexical`` None: 0). Raises ``ValueError`` when the
    columns differ in length."""
    cols = [np.asarray(c, dtype=np.float32).reshape(-1) for c in (rerank, retrieval, popularity)]
    n = len(cols[0])
    cols.append(
        np.zeros(n, np.float32)
        if lexical is None
        else np.asarray(lexical, dtype=np.float32).reshape(-1)
    )
    if any(len(c) != n for c in cols):
        raise ValueError(
            f"blend features need one value per candidate each; got lengths "
            f"{[len(c) for c in cols]} for {list(BLEND_FEATURES)}"
        )
    return np.stack(cols, axis=1)


# -- re-embedding jobs and index versions (client/embed, towers/index_version.py) ----------

#: The manifest of a finished re-embedding job's output folder (``towerserve embed``): model
#: version, dimension, engine, shards with their sha256, bad-row counts.
EMBED_MANIFEST_FILE = "embed_manifest.json"
#: A running re-embedding job's checkpoint state (what catalog, model and shard size it is).
EMBED_STATE_FILE = "embed_job.json"
#: Item ids a delta catalog deletes, int64 ``[R]`` (a job's output folder).
DELETED_IDS_FILE = "deleted_ids.npy"
#: Catalog rows a re-embedding job skipped: ``row``, ``item_id`` (null if missing), ``reason``.
BAD_ROWS_FILE = "bad_rows.parquet"
#: The manifest of an index version folder (``towerserve index build``): model version,
#: dimension, item count, index parameters, the index file's size and sha256.
INDEX_MANIFEST_FILE = "index_manifest.json"


def embed_shard_file(shard: int) -> str:
    """File name of vector shard number ``shard`` (>= 0) of a re-embedding job: Parquet with
    ``item_id`` int64 and ``vector`` fixed-size list of float32 ``[D]`` per row."""
    if shard < 0:
        raise ValueError(f"shard must be >= 0, got {shard}")
    return f"shard-{shard:05d}.parquet"


# -- item identity (issue 9 item 4) ----------------------------------------------------------

#: The item tower's learned id vectors (optional; text only without it): ``item_ids`` int64
#: ``[M]`` sorted (the items with training interactions) and ``vectors`` float32 ``[M, D]``.
#: ``ITEM_EMBEDDINGS_FILE`` already holds every item's combined vector.
ITEM_ID_VECTORS_FILE = "item_id_vectors.npz"


def combine_item_vectors(text_vecs: np.ndarray, id_vecs: np.ndarray) -> np.ndarray:
    """Item vectors float32 ``[n, D]``: ``normalize(normalize(text) + id)`` row by row, the
    arithmetic ``towers.models.combine`` trains with. A zero id row gives the text vector."""
    text = np.asarray(text_vecs, np.float32)
    text = text / np.maximum(np.linalg.norm(text, axis=-1, keepdims=True), 1e-6)
    out = text + np.asarray(id_vecs, np.float32)
    return (out / np.maximum(np.linalg.norm(out, axis=-1, keepdims=True), 1e-6)).astype(np.float32)


@dataclass(frozen=True)
class ItemIdTable:
    """Learned id vectors by item id (:data:`ITEM_ID_VECTORS_FILE`); an unknown id (a new
    item, or ``-1`` for "no id") has none and keeps its text vector."""

    item_ids: np.ndarray  # int64 [M], sorted
    vectors: np.ndarray  # float32 [M, D]

    def __post_init__(self) -> None:
        if self.item_ids.ndim != 1 or self.vectors.ndim != 2:
            raise ValueError(
                f"an id table needs item_ids [M] and vectors [M, D], got "
                f"{self.item_ids.shape} and {self.vectors.shape}"
            )
        if len(self.item_ids) != len(self.vectors):
            raise ValueError(
                f"id table: {len(self.item_ids)} item ids but {len(self.vectors)} vectors"
            )
        if len(self.item_ids) > 1 and not np.all(np.diff(self.item_ids) > 0):
            raise ValueError("id table: item_ids must be sorted and unique")

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    @classmethod
    def load(cls, folder: Path) -> ItemIdTable | None:
        """The table in ``folder``, or ``None`` when it has no :data:`ITEM_ID_VECTORS_FILE`."""
        path = Path(folder) / ITEM_ID_VECTORS_FILE
        if not path.is_file():
            return None
        with np.load(path) as npz:
            return cls(npz["item_ids"].astype(np.int64), npz["vectors"].astype(np.float32))

    def save(self, folder: Path) -> Path:
        """Write :data:`ITEM_ID_VECTORS_FILE` into ``folder``; returns its path."""
        path = Path(folder) / ITEM_ID_VECTORS_FILE
        np.savez(path, item_ids=self.item_ids, vectors=self.vectors)
        return path

    def lookup(self, item_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Id vectors float32 ``[n, D]`` (zeros where unknown) and the known mask ``[n]``."""
        ids = np.asarray(item_ids, np.int64).reshape(-1)
        out = np.zeros((len(ids), self.dim), np.float32)
        if not len(self.item_ids):
            return out, np.zeros(len(ids), bool)
        at = np.clip(np.searchsorted(self.item_ids, ids), 0, len(self.item_ids) - 1)
        known = self.item_ids[at] == ids
        out[known] = self.vectors[at[known]]
        return out, known

    def combine(self, text_vecs: np.ndarray, item_ids: np.ndarray) -> np.ndarray:
        """The served item vectors of texts ``[n, D]`` with ``item_ids`` ``[n]``: combined
        where the id is known, the text vector (renormalised) where not."""
        id_vecs, _ = self.lookup(item_ids)
        if id_vecs.shape[1] != np.shape(text_vecs)[-1]:
            raise ValueError(
                f"id table has dim {id_vecs.shape[1]}, text vectors {np.shape(text_vecs)}"
            )
        return combine_item_vectors(text_vecs, id_vecs)
