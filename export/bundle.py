"""``towerserve export`` step 1: everything one model version serves, in one flat folder.

The bundle ties together, under one ``model_version``: the three ONNX graphs (parity-checked
against PyTorch), the item-embedding table, the FAISS index, the pre-tokenized item text,
titles, popularity, the lexical (BM25) index, the retriever's popularity prior, the blend,
the stored user histories and a ``manifest.json`` with sha256 checksums of every file.
``export/repository.py`` then lays it out as a Triton repository.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from datetime import UTC, datetime
from pathlib import Path

import faiss
import numpy as np

from export.index import build_index
from export.onnx import check_parity, export_onnx
from export.torch_program import check_program_parity, export_program
from towers.data import item_texts, load_dataset
from towers.examples import item_popularity, latest_histories
from towers.finetune import embed_items
from towers.lexical import LexicalIndex
from towers.models import load_module
from towers.prior import load_prior
from towers.teacher import tokenizer_path
from towers.text import item_token_lists, load_tokenizer

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
#: The retriever's popularity prior by item id (``item_ids``, ``values``).
PRIOR_BUNDLE_FILE = "item_prior.npz"


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def build_bundle(
    artifacts: Path,
    data_dir: Path | None,
    bundle: Path,
    *,
    index_kind: str = "auto",
    nprobe: int = 16,
    max_k: int = 100,
    n_candidates: int = 100,
    bf16: bool = True,
    torch_programs: bool = False,
) -> dict[str, object]:
    """Write the bundle for the trained models in ``artifacts`` to ``bundle`` (replaced whole).

    ``data_dir`` defaults to the data set the models were trained on (from the train report).
    ``torch_programs`` also writes each graph's ``torch.export`` program (``<graph>.pt2``,
    parity-checked), which GPU serving runs (serving/graphs.py).
    """
    report_path = artifacts / "train_report.json"
    if not report_path.is_file():
        raise FileNotFoundError(f"{report_path} missing: run `towerserve train` first")
    report = json.loads(report_path.read_text())
    data_dir = data_dir or Path(report["data_dir"])
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
    for kind in ("item_tower", "user_tower", "reranker"):
        modules[kind] = load_module(kind, artifacts / kind)
        path = export_onnx(kind, modules[kind], tmp / f"{kind}.onnx")
        parity[kind] = check_parity(kind, modules[kind], path)
        if torch_programs:
            program = export_program(kind, modules[kind], tmp / f"{kind}.pt2")
            parity[f"{kind}.pt2"] = check_program_parity(kind, modules[kind], program)

    vectors = embed_items(modules["item_tower"], tok, texts, bf16=bf16)
    np.save(tmp / "item_embeddings.npy", vectors)
    np.save(tmp / "item_ids.npy", item_ids)
    index, index_params = build_index(vectors, item_ids, kind=index_kind, nprobe=nprobe)
    faiss.write_index(index, str(tmp / "index.faiss"))

    tokens = item_token_lists(tok, texts)
    offsets = np.concatenate([[0], np.cumsum([len(t) for t in tokens])]).astype(np.int64)
    np.savez(
        tmp / "item_tokens.npz",
        item_ids=item_ids,
        offsets=offsets,
        tokens=np.concatenate(tokens).astype(np.int32) if tokens else np.zeros(0, np.int32),
    )
    LexicalIndex.build(texts).save(tmp)
    (tmp / "item_titles.json").write_text(json.dumps(items["title"].astype(str).tolist()))
    np.save(tmp / "popularity.npy", item_popularity(ds.events, item_ids))
    shutil.copy2(artifacts / "blend.json", tmp / "blend.json")
    prior = load_prior(artifacts)
    if prior is not None and len(prior.values) == len(item_ids):
        np.savez(tmp / PRIOR_BUNDLE_FILE, item_ids=item_ids, values=prior.values)
    elif prior is not None:
        log.warning("the prior in %s does not match the catalog: left out", artifacts)
        prior = None
    users, offs, hist_items, hist_ts = latest_histories(ds.events)
    np.savez(
        tmp / "user_history.npz", user_ids=users, offsets=offs, item_ids=hist_items, ts=hist_ts
    )
    shutil.copy2(tokenizer_path(), tmp / "tokenizer.json")

    manifest = {
        "model_version": report["model_version"],
        "dim": int(vectors.shape[1]),
        "n_items": int(len(item_ids)),
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "index": index_params,
        "recency_tau_s": float(report["config"]["recency_tau_s"]),
        "max_k": max_k,
        "n_candidates": n_candidates,
        "onnx_parity_max_abs_diff": parity,
        "embedding_precision": "bf16" if bf16 else "fp32",
        "prior": prior.meta() if prior is not None else {},
        "checksums": {p.name: sha256(p) for p in sorted(tmp.iterdir()) if p.is_file()},
    }
    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2))
    if bundle.exists():
        old = bundle.with_name(bundle.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(bundle, old)
        os.replace(tmp, bundle)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, bundle)
    log.info("bundle %s: version %s, %d items", bundle, manifest["model_version"], len(item_ids))
    return manifest
