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


def test_rows_run_in_batches_of_like_token_count_and_come_back_in_order(
    teacher_tokenizer,
) -> None:
    fn = StandIn()
    enc = ItemEncoder(teacher_tokenizer, fn, batch_size=2)
    rows = ["long " * 20 + "coat", "hat", "long " * 20 + "scarf", "cap"]  # long, short, ...
    vecs = enc.embed(rows)
    # in request order each batch would pad a short row to 23 tokens; sorted, none is padded
    assert fn.calls == [(2, 3), (2, 23)]
    assert vecs[:, 0].tolist() == [23, 3, 23, 3]  # each row's own token count, in row order
    single = [enc.embed([r])[0] for r in rows]
    np.testing.assert_array_equal(vecs, np.stack(single))


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
    (answer,) = enc.embed_requests([texts(*(t.encode() for t in titles[:3]))])
    assert isinstance(answer, dict)  # each row says which model embedded it
    assert answer["MODEL_VERSION"].tolist() == [[b"test-v1"]] * 3


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


class UnitText:
    """Item tower stand-in with unit vectors: ``[1, 0, 0, 0]`` for every text."""

    def __call__(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        out = np.zeros((len(input_ids), 4), np.float32)
        out[:, 0] = 1.0
        return out


def test_item_ids_combine_known_ids_and_leave_new_items_text_only(teacher_tokenizer) -> None:
    from towers.bundle_contract import ItemIdTable, combine_item_vectors

    id_vecs = np.array([[0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 2.0, 0.0]], np.float32)
    table = ItemIdTable(np.array([7, 9], np.int64), id_vecs)
    enc = ItemEncoder(teacher_tokenizer, UnitText(), id_table=table)
    text = enc.embed(["a", "b", "c", "d"])  # no ids: text only (the old call still works)
    vecs = enc.embed(["a", "b", "c", "d"], item_ids=[9, 7, 8, -1])
    np.testing.assert_allclose(vecs[:2], combine_item_vectors(text[:2], id_vecs[::-1]))
    np.testing.assert_allclose(vecs[2:], text[2:])  # unknown id and -1: text only
    with pytest.raises(ValueError, match="one id per text"):
        enc.embed(["a", "b"], item_ids=[7])
    ids = {"ITEM_ID": np.array([[9], [8]], np.int64)}
    results = enc.embed_requests(
        [
            {**texts(b"a", b"b"), **ids},
            texts(b"c"),
            {**texts(b"d"), "ITEM_ID": np.array([[7], [9]], np.int64)},
            {**texts(b"e"), "ITEM_ID": np.array([[7.0]], np.float32)},
        ]
    )
    np.testing.assert_allclose(results[0]["ITEM_VECTOR"], vecs[[0, 2]])
    np.testing.assert_allclose(results[1]["ITEM_VECTOR"], text[:1])
    assert isinstance(results[2], RequestError) and "one id per ITEM_TEXT row" in str(results[2])
    assert isinstance(results[3], RequestError) and "INT64" in str(results[3])
    # a bundle without an id table: ids are accepted and ignored
    plain = ItemEncoder(teacher_tokenizer, UnitText())
    np.testing.assert_allclose(plain.embed(["a"], item_ids=[9]), text[:1])
