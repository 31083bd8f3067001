"""Item tower serving: one tower run per batch of requests, per-request errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from serving.errors import RequestError
from serving.item_tower import ItemEncoder, decode_texts
from towers.features import MAX_ITEM_TOKENS


class StandIn:
    """Item tower stand-in: vector = [number of tokens, first token id], records calls."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, int]] = []

    def __call__(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        self.calls.append(input_ids.shape)
        return np.stack([attention_mask.sum(1), input_ids[:, 1]], axis=1).astype(np.float32)


def texts(*values: bytes) -> dict[str, np.ndarray]:
    return {"ITEM_TEXT": np.array(values, dtype=object).reshape(-1, 1)}


def test_requests_share_one_run_and_are_split_back(teacher_tokenizer) -> None:
    fn = StandIn()
    enc = ItemEncoder(teacher_tokenizer, fn)
    results = enc.embed_requests(
        [texts(b"red shirt", b"blue jeans"), texts(b"\xff bad"), texts(b"green hat")]
    )
    assert len(fn.calls) == 1 and fn.calls[0][0] == 3
    assert results[0]["ITEM_VECTOR"].shape == (2, 2)
    assert isinstance(results[1], RequestError) and "row 0 is not UTF-8" in str(results[1])
    single = enc.embed(["green hat"])
    np.testing.assert_array_equal(results[2]["ITEM_VECTOR"], single)


def test_long_text_is_truncated_and_batches_are_sliced(teacher_tokenizer) -> None:
    fn = StandIn()
    enc = ItemEncoder(teacher_tokenizer, fn, batch_size=4)
    vecs = enc.embed(["word " * 500] * 6)
    assert vecs.shape == (6, 2) and vecs[0, 0] == MAX_ITEM_TOKENS + 2
    assert [c[0] for c in fn.calls] == [4, 2]


def test_a_failing_run_is_reported_on_every_valid_request(teacher_tokenizer) -> None:
    def broken(**_: np.ndarray) -> np.ndarray:
        raise RuntimeError("boom")

    results = ItemEncoder(teacher_tokenizer, broken).embed_requests(
        [texts(b"a"), texts(b"\xff"), texts(b"b")]
    )
    assert isinstance(results[0], RuntimeError) and isinstance(results[2], RuntimeError)
    assert isinstance(results[1], RequestError)


def test_decode_texts_shapes() -> None:
    assert decode_texts(np.array([b"a", b"b"], dtype=object)) == ["a", "b"]
    with pytest.raises(RequestError, match=r"shape \[batch, 1\]"):
        decode_texts(np.zeros((2, 2), dtype=object))


def test_from_dir_matches_the_bundle_table(repository: Path, bundle: Path) -> None:
    import json

    enc = ItemEncoder.from_dir(repository / "item_tower" / "1", model_version="test-v1")
    titles = json.loads((bundle / "item_titles.json").read_text())[:5]
    np.testing.assert_allclose(
        enc.embed(titles), np.load(bundle / "item_embeddings.npy")[:5], atol=1e-5
    )


def test_warm_up_runs_one_batch_and_leaves_embeddings_unchanged(teacher_tokenizer) -> None:
    fn = StandIn()
    enc = ItemEncoder(teacher_tokenizer, fn)
    before = enc.embed(["green hat"])
    fn.calls.clear()
    enc.warm_up()
    assert len(fn.calls) == 1 and fn.calls[0][0] == 2
    np.testing.assert_array_equal(enc.embed(["green hat"]), before)


def test_warm_up_with_the_real_onnx_graph(repository: Path, bundle: Path) -> None:
    import json

    enc = ItemEncoder.from_dir(repository / "item_tower" / "1", model_version="test-v1")
    enc.warm_up()
    titles = json.loads((bundle / "item_titles.json").read_text())[:3]
    np.testing.assert_allclose(
        enc.embed(titles), np.load(bundle / "item_embeddings.npy")[:3], atol=1e-5
    )
