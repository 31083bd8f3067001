"""``towerserve export`` step 1: everything one model version serves, in one flat folder.

The bundle ties together, under one ``model_version``: the three ONNX graphs (parity-checked
against PyTorch), the item-embedding table (text and id vectors combined), the item tower's
learned id vectors (``ItemIdTable``, when it has any), the FAISS index, the pre-tokenized item text,
titles, popularity, the lexical (BM25) index, the retriever's popularity prior, the blend,
the stored user histories (events before the training cut) and a ``manifest.json`` with
sha256 checksums of every file. File names and the manifest class are the bundle contract's
(``towers/bundle_contract.py``).
``export/repository.py`` then lays it out as a Triton repository.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import faiss
import numpy as np

from export.onnx import check_parity, export_onnx, has_context_once_form
from export.torch_program import check_program_parity, export_program
from towers.bundle_contract import (
    BLEND_FILE,
    COVISIT_FILE,
    INDEX_FILE,
    ITEM_EMBEDDINGS_FILE,
    ITEM_IDS_FILE,
    ITEM_TITLES_FILE,
    ITEM_TOKENS_FILE,
    MANIFEST_FILE,
    ONNX_GRAPHS,
    POPULARITY_FILE,
    PRIOR_BUNDLE_FILE,
    TOKENIZER_FILE,
    TRAIN_REPORT_FILE,
    USER_HISTORY_FILE,
    USER_HISTORY_HEAD_FILE,
    USER_HISTORY_SEQUENCE_FILE,
    ItemIdTable,
    Manifest,
    checksums,
    context_once_file,
    onnx_file,
    sha256,
    torch_program_file,
)
from towers.data import DataError, item_texts, load_dataset
from towers.examples import item_popularity, latest_histories
from towers.features import LONG_HISTORY
from towers.finetune import embed_items
from towers.index import build_index
from towers.lexical import LexicalIndex
from towers.models import ItemTower, UserTower, load_module
from towers.prior import bundle_arrays, load_prior
from towers.teacher import tokenizer_path
from towers.text import item_token_lists, load_tokenizer

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

#: Old name of :data:`towers.bundle_contract.MANIFEST_FILE`; ``sha256`` and
#: ``PRIOR_BUNDLE_FILE`` are re-exported from there too.
MANIFEST = MANIFEST_FILE
__all__ = ["MANIFEST", "PRIOR_BUNDLE_FILE", "build_bundle", "sha256", "stored_histories"]


def stored_histories(
    events: pd.DataFrame, cut_ts: int | None, n: int = LONG_HISTORY
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The server's stored user histories (``user_history.npz``): each user's newest ``n``
    events before the model's training cut ``cut_ts`` (unix s; the train report's
    ``events_until_ts``, which an incremental update moves to its window's end; ``None``:
    every event), as ``user_ids``, ``offsets``, ``item_ids``, ``ts``
    (towers.examples.latest_histories). Events at or after the cut are what an evaluation
    holds out: a stored history must not contain them."""
    seen = events if cut_ts is None else events[events["ts"].to_numpy() < int(cut_ts)]
    return latest_histories(seen, n)


def build_bundle(
    artifacts: Path,
    data_dir: Path | None,
    bundle: Path,
    *,
    index_kind: str = "auto",
    nprobe: int | None = None,
    max_k: int = 100,
    n_candidates: int = 100,
    bf16: bool = True,
    torch_programs: bool = False,
) -> Manifest:
    """Write the bundle for the trained models in ``artifacts`` to ``bundle`` (replaced whole)
    and return its manifest.

    ``data_dir`` defaults to the data set the models were trained on (from the train report).
    ``torch_programs`` also writes each graph's ``torch.export`` program (``<graph>.pt2``,
    parity-checked), which GPU serving runs (serving/graphs.py).

    Raises:
        FileNotFoundError: ``artifacts`` has no train report.
        DataError: no ``data_dir`` and the trained-on data set has moved or gone.
    """
    report_path = artifacts / TRAIN_REPORT_FILE
    if not report_path.is_file():
        raise FileNotFoundError(f"{report_path} missing: run `towerserve train` first")
    report = json.loads(report_path.read_text())
    if data_dir is None:
        data_dir = Path(report["data_dir"])
        if not data_dir.is_dir():
            raise DataError(
                f"{data_dir}, the data set {artifacts} was trained on (its train report), is "
                "not there any more: give the catalog with --data"
            )
    ds = load_dataset(data_dir)
    items = ds.items.reset_index(drop=True)
    item_ids = items["item_id"].to_numpy(np.int64)
    texts = item_texts(items)
    tok = load_tokenizer(tokenizer_path())

    tmp = bundle.with_name(bundle.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    parity = {}
    modules = {}
    for kind in ONNX_GRAPHS:
        modules[kind] = load_module(kind, artifacts / kind)
        # the item tower's graph is its text part; the id vectors travel as a table
        graph = modules[kind]
        if isinstance(graph, ItemTower):
            graph = graph.text_only()
        path = export_onnx(kind, graph, tmp / onnx_file(kind))
        parity[kind] = check_parity(kind, graph, path)
        if kind == "reranker" and has_context_once_form(graph):  # what the CPU serves
            name = context_once_file(kind)
            path = export_onnx("reranker_context_once", graph, tmp / name)
            parity[name] = check_parity("reranker_context_once", graph, path)
        if torch_programs:
            program = export_program(kind, graph, tmp / torch_program_file(kind))
            parity[torch_program_file(kind)] = check_program_parity(kind, graph, program)

    user_tower = modules["user_tower"]
    if isinstance(user_tower, UserTower):  # the empty-query path without the graph
        np.save(tmp / USER_HISTORY_HEAD_FILE, user_tower.history_head())
        sequence = user_tower.sequence_arrays()
        if sequence is not None:  # ... and the sequence block's term, in numpy too
            np.savez(tmp / USER_HISTORY_SEQUENCE_FILE, **sequence)
    item_tower = modules["item_tower"]
    if not isinstance(item_tower, ItemTower):
        raise TypeError(f"{artifacts / 'item_tower'} is not an item tower")
    # the served item vectors: text plus the learned id vector where the item has one; the
    # id vectors also go in the bundle, so the served item_tower (text graph + id table)
    # gives a re-embedding job the same vector
    vectors = embed_items(item_tower, tok, texts, item_ids=item_ids, bf16=bf16)
    np.save(tmp / ITEM_EMBEDDINGS_FILE, vectors)
    if item_tower.n_ids:
        keys = item_tower.id_keys.cpu().numpy().astype(np.int64)
        ItemIdTable(keys, item_tower.id_vectors()).save(tmp)
    np.save(tmp / ITEM_IDS_FILE, item_ids)
    index, index_params = build_index(vectors, item_ids, kind=index_kind, nprobe=nprobe)
    faiss.write_index(index, str(tmp / INDEX_FILE))

    tokens = item_token_lists(tok, texts)
    offsets = np.concatenate([[0], np.cumsum([len(t) for t in tokens])]).astype(np.int64)
    np.savez(
        tmp / ITEM_TOKENS_FILE,
        item_ids=item_ids,
        offsets=offsets,
        tokens=np.concatenate(tokens).astype(np.int32) if tokens else np.zeros(0, np.int32),
    )
    LexicalIndex.build(texts).save(tmp)
    (tmp / ITEM_TITLES_FILE).write_text(json.dumps(items["title"].astype(str).tolist()))
    # The reranker's popularity feature counts what the model could know: events before the
    # training cut (all events when nothing was held out), so a served evaluation on the
    # held-out period is not fed that period's own popularity.
    cut = report.get("events_until_ts")
    seen = ds.events if cut is None else ds.events[ds.events["ts"] < int(cut)]
    np.save(tmp / POPULARITY_FILE, item_popularity(seen, item_ids))
    shutil.copy2(artifacts / BLEND_FILE, tmp / BLEND_FILE)
    prior = load_prior(artifacts)
    if prior is not None and len(prior.values) == len(item_ids):
        prior, prior_arrays = bundle_arrays(prior, item_ids, ds.events)  # + moving-prior counts
        np.savez(tmp / PRIOR_BUNDLE_FILE, **prior_arrays)
    elif prior is not None:
        log.warning("the prior in %s does not match the catalog: left out", artifacts)
        prior = None
    # the co-visitation table (towers/covisit.py) travels as trained; older artifacts lack it
    if (artifacts / COVISIT_FILE).is_file():
        shutil.copy2(artifacts / COVISIT_FILE, tmp / COVISIT_FILE)
    users, offs, hist_items, hist_ts = stored_histories(ds.events, cut)
    np.savez(tmp / USER_HISTORY_FILE, user_ids=users, offsets=offs, item_ids=hist_items, ts=hist_ts)
    shutil.copy2(tokenizer_path(), tmp / TOKENIZER_FILE)

    manifest = Manifest(
        model_version=str(report["model_version"]),
        dim=int(vectors.shape[1]),
        n_items=int(len(item_ids)),
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        index=dict(index_params),
        recency_tau_s=float(report["config"]["recency_tau_s"]),
        max_k=max_k,
        n_candidates=n_candidates,
        onnx_parity_max_abs_diff={k: float(v) for k, v in parity.items()},
        embedding_precision="bf16" if bf16 else "fp32",
        prior=prior.meta() if prior is not None else {},
        checksums=checksums(tmp),
    )
    manifest.write(tmp)
    if bundle.exists():
        old = bundle.with_name(bundle.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(bundle, old)
        os.replace(tmp, bundle)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, bundle)
    log.info("bundle %s: version %s, %d items", bundle, manifest.model_version, len(item_ids))
    return manifest
