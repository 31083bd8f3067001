"""Stage 1: students learn to reproduce the teacher's sentence embeddings.

One student (a shallow copy of the teacher) is distilled on catalog and query text with a
cosine loss on the mean-pooled output; both towers start from it. The projection to the
shared space starts as the top principal directions of the teacher's item embeddings, so
the students' inner products approximate the teacher's before any fine-tuning.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch
from tokenizers import Tokenizer
from transformers import BertModel

from towers.encoder import TextEncoder, make_student
from towers.progress import progress
from towers.text import encode_items

log = logging.getLogger(__name__)


def pca_projection(vectors: np.ndarray, dim: int) -> torch.Tensor:
    """``[dim, hidden]`` rows: the top principal directions of ``vectors`` (``[n, hidden]``)."""
    if dim > vectors.shape[1]:
        raise ValueError(f"dim {dim} exceeds the teacher width {vectors.shape[1]}")
    centred = vectors - vectors.mean(0, keepdims=True)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    return torch.from_numpy(np.ascontiguousarray(vt[:dim], dtype=np.float32))


def distil_student(
    teacher: BertModel,
    tok: Tokenizer,
    texts: Sequence[str],
    targets: np.ndarray,
    *,
    n_layers: int,
    dim: int,
    epochs: int,
    batch_size: int,
    lr: float,
    bf16: bool,
    seed: int,
) -> tuple[TextEncoder, list[float]]:
    """Distil a ``n_layers`` student on ``texts`` towards ``targets`` (teacher vectors).

    Returns the student (projection not yet set) and the mean loss of each epoch.
    """
    torch.manual_seed(seed)
    student = TextEncoder(make_student(teacher, n_layers), dim)
    student.train()
    opt = torch.optim.AdamW(student.bert.parameters(), lr=lr, weight_decay=0.01)
    rng = np.random.default_rng(seed)
    target_t = torch.from_numpy(targets)
    losses: list[float] = []
    n_batches = (len(texts) + batch_size - 1) // batch_size
    for epoch in range(epochs):
        order = rng.permutation(len(texts))
        total = 0.0
        for b in progress(range(n_batches), f"distil epoch {epoch + 1}/{epochs}"):
            idx = order[b * batch_size : (b + 1) * batch_size]
            ids, mask = encode_items(tok, [texts[i] for i in idx])
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                pooled = student.pooled(torch.from_numpy(ids), torch.from_numpy(mask))
            cos = torch.nn.functional.cosine_similarity(pooled.float(), target_t[idx], dim=-1)
            loss = (1.0 - cos).mean()
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0)
            opt.step()
            total += loss.item()
        losses.append(total / max(n_batches, 1))
        log.info("distil epoch %d: 1-cos %.4f", epoch + 1, losses[-1])
    student.eval()
    return student, losses
