"""An int8 form of the cross-encoder for the CPU: NNCF post-training quantization of the
exported ONNX graph, saved as OpenVINO IR beside it in the bundle.

The calibration set is real pairs as the served reranker builds them
(``towers.features.build_pairs``): the bundle's item texts after contexts taken from training
queries when the data set has them, else from other items' titles (the empty-query context).
NNCF's transformer preset keeps the precision-sensitive parts (softmax, layer norms, the
embeddings) in floating point and quantizes the matrix multiplications, which run on the
CPU's int8 units (AMX-INT8 / VNNI); the rest runs bf16 (serving/openvino_engine.py).

The quality of the int8 reranker is judged on rankings (``towerserve eval --repository``:
NDCG@10 of the served path), not on a logit parity; export records the max abs logit
difference from ONNX Runtime fp32 on a held-out calibration batch in the manifest.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from towers.bundle_contract import (
    TOKENIZER_FILE,
    context_once_file,
    int8_files,
    load_manifest,
    onnx_file,
    sha256,
)
from towers.features import CONTEXT_ONCE_INPUTS, build_context_once, build_pairs
from towers.text import load_tokenizer, query_token_list

log = logging.getLogger(__name__)

__all__ = ["add_int8_reranker", "calibration_pairs", "training_contexts"]

#: Pairs per calibration batch (one served call's worth) and batches used.
CALIBRATION_BATCH = 16
CALIBRATION_BATCHES = 64


def training_contexts(artifacts: Path, data_dir: Path | None = None) -> list[str]:
    """The training-split query texts of the data set ``artifacts`` was trained on (or
    ``data_dir``): the calibration contexts; empty when the data set has no queries."""
    import json

    from towers.bundle_contract import TRAIN_REPORT_FILE
    from towers.data import load_dataset

    if data_dir is None:
        data_dir = Path(json.loads((Path(artifacts) / TRAIN_REPORT_FILE).read_text())["data_dir"])
    queries = load_dataset(data_dir).queries
    if len(queries) == 0:
        return []
    train = queries[queries["split"] == "train"]
    return train["query_text"].astype(str).drop_duplicates().tolist()


def calibration_pairs(
    bundle: Path,
    contexts: Sequence[str] = (),
    *,
    n_batches: int = CALIBRATION_BATCHES,
    seed: int = 0,
    context_once: bool = False,
) -> list[dict[str, np.ndarray]]:
    """``n_batches`` reranker feeds of ``CALIBRATION_BATCH`` real pairs each: a context (one of
    ``contexts``, else the titles of two random catalog items) and random catalog items, as
    pairs or (``context_once``) in the context-once graph's inputs."""
    from serving.catalog import ItemTexts

    items = ItemTexts.from_dir(bundle)
    tok = load_tokenizer(bundle / TOKENIZER_FILE)
    rng = np.random.default_rng(seed)
    n = len(items.rows)
    if n == 0:
        raise ValueError(f"{bundle} has no items to calibrate on")
    feeds = []
    for _ in range(n_batches):
        if contexts:
            text = contexts[int(rng.integers(len(contexts)))]
        else:
            text = " ".join(items.titles[int(r)] for r in rng.integers(n, size=2))
        rows = rng.integers(n, size=CALIBRATION_BATCH)
        query, item_tokens = query_token_list(tok, text), [items.item_tokens(int(r)) for r in rows]
        if context_once:
            feeds.append(build_context_once(query, item_tokens))
            continue
        ids, mask, types = build_pairs(query, item_tokens)
        feeds.append({"input_ids": ids, "attention_mask": mask, "token_type_ids": types})
    return feeds


def add_int8_reranker(bundle: Path, contexts: Sequence[str] = ()) -> float:
    """Quantize ``bundle``'s ``reranker.onnx`` to int8 (NNCF, transformer preset), write
    ``reranker.int8.xml``/``.bin``, add their checksums and the logit difference to the
    manifest; returns the max abs logit difference from ONNX Runtime fp32 on held-out pairs."""
    import nncf
    import openvino as ov

    from serving.onnx_session import OnnxModel
    from serving.openvino_engine import OpenVinoGraph

    bundle = Path(bundle)
    manifest = load_manifest(bundle)
    source = bundle / onnx_file("reranker")
    if (bundle / context_once_file("reranker")).is_file():  # the form the CPU serves
        source = bundle / context_once_file("reranker")
    model = ov.Core().read_model(str(source))
    context_once = {i.get_any_name() for i in model.inputs} == set(CONTEXT_ONCE_INPUTS)
    calib = calibration_pairs(bundle, contexts, context_once=context_once)
    quantized = nncf.quantize(
        model,
        nncf.Dataset(calib),
        model_type=nncf.ModelType.TRANSFORMER,
        subset_size=len(calib) * CALIBRATION_BATCH,
    )
    xml, bin_ = int8_files("reranker")
    ov.save_model(quantized, str(bundle / xml), compress_to_fp16=False)
    held_out = calibration_pairs(bundle, contexts, n_batches=4, seed=1, context_once=context_once)
    fp32 = OnnxModel(source)
    int8 = OpenVinoGraph(bundle / xml, precision="int8")
    diff = max(float(np.abs(int8(**f) - fp32(**f)).max()) for f in held_out)
    log.info("reranker int8 (OpenVINO IR): max abs logit diff from fp32 %.3f", diff)
    replace(
        manifest,
        checksums={**manifest.checksums, xml: sha256(bundle / xml), bin_: sha256(bundle / bin_)},
        onnx_parity_max_abs_diff={**manifest.onnx_parity_max_abs_diff, xml: diff},
    ).write(bundle)
    return diff
