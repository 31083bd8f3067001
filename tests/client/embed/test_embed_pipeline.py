"""The local engine's hot loop (client/embed/pipeline.py): shards tokenized whole into batches
of like token count, the next shard prefetched on a background thread. The tokenizer and the
item tower are the untrained bundle's real ones."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from client.embed import LocalEngine
from client.embed.engines import Shard, embed_by_length
from client.embed.pipeline import prefetch, restore_order, tokenize_shard
from towers.bundle_contract import TOKENIZER_FILE
from towers.text import encode_items, load_tokenizer

TEXTS = [
    "red shirt",
    "a very long waterproof hiking jacket with a hood, two zip pockets and taped seams",
    "hat",
    "blue running shoes | running shoes, size 4",
    "socks",
    "black leather backpack with a padded laptop sleeve",
    "jeans",
]


def test_tokenize_shard_keeps_each_rows_tokens_and_sorts_by_token_count(untrained_bundle):
    tok = load_tokenizer(untrained_bundle / TOKENIZER_FILE)
    got = tokenize_shard(tok, TEXTS, batch_size=3)
    lengths = [int(encode_items(tok, [t])[1].sum()) for t in TEXTS]
    assert sorted(got.order.tolist()) == list(range(len(TEXTS)))
    assert [lengths[i] for i in got.order] == sorted(lengths)
    assert [len(ids) for ids, _ in got.batches] == [3, 3, 1]
    rows = iter(got.order)
    for ids, mask in got.batches:
        assert ids.flags.c_contiguous and ids.dtype == np.int64 and mask.shape == ids.shape
        assert ids.shape[1] == mask.sum(1).max(), "a batch pads to its longest row only"
        for row_ids, row_mask in zip(ids, mask, strict=True):
            want_ids, want_mask = encode_items(tok, [TEXTS[next(rows)]])
            n = int(want_mask.sum())
            assert row_ids[:n].tolist() == want_ids[0, :n].tolist()
            assert row_mask.tolist() == [1] * n + [0] * (len(row_mask) - n)
    assert got.tokens == sum(lengths)
    assert got.padded_tokens == sum(ids.size for ids, _ in got.batches)
    empty = tokenize_shard(tok, [], batch_size=3)
    assert empty.batches == [] and len(empty.order) == 0
    with pytest.raises(ValueError, match="batch_size"):
        tokenize_shard(tok, TEXTS, batch_size=0)


def test_restore_order_inverts_the_batch_order():
    order = np.array([2, 0, 3, 1])
    vectors = np.array([[2.0], [0.0], [3.0], [1.0]])
    assert restore_order(vectors, order)[:, 0].tolist() == [0.0, 1.0, 2.0, 3.0]
    with pytest.raises(ValueError, match="3 vectors for 4 rows"):
        restore_order(vectors[:3], order)


def test_prefetch_keeps_order_and_works_ahead_of_the_consumer():
    second_started = threading.Event()

    def work(i: int) -> int:
        if i == 1:
            second_started.set()
        return i * 10

    got = []
    for value in prefetch(range(5), work):
        if value == 0:  # the consumer holds item 0: item 1 is made meanwhile
            assert second_started.wait(timeout=30), "item 1 was not made ahead"
        got.append(value)
    assert got == [0, 10, 20, 30, 40]
    with pytest.raises(ValueError, match="depth"):
        list(prefetch(range(3), work, depth=0))


def test_prefetch_raises_the_workers_exception_after_the_items_before_it():
    def work(i: int) -> int:
        if i == 2:
            raise RuntimeError("tokenizer failed on item 2")
        return i

    got = []
    with pytest.raises(RuntimeError, match="item 2"):
        for value in prefetch(range(5), work):
            got.append(value)
    assert got == [0, 1]
    assert not [t for t in threading.enumerate() if t.name.startswith("prefetch")]


def test_prefetch_stops_its_thread_when_the_consumer_stops_early():
    calls = []
    gen = prefetch(range(100), lambda i: calls.append(i) or i)
    assert next(gen) == 0
    gen.close()
    assert len(calls) <= 3, "work went on after the consumer stopped"
    assert not [t for t in threading.enumerate() if t.name.startswith("prefetch")]


@pytest.mark.parametrize("prefetching", [True, False])
def test_local_engine_matches_the_served_encoder_in_catalog_order(untrained_id_bundle, prefetching):
    texts = [f"{t} model {i}" * (1 + i % 4) for i, t in enumerate(TEXTS * 30)]
    item_ids = np.arange(len(texts), dtype=np.int64) * 2  # half of them past the catalog's ids
    engine = LocalEngine(
        untrained_id_bundle,
        runtime="onnxruntime",
        precision="fp32",
        threads=1,
        batch_size=16,
        prefetch=prefetching,
    )
    engine.prepare([])
    assert engine.encoder is not None
    cuts = [(7, 0, 100), (3, 100, 101), (9, 101, len(texts))]
    shards = [Shard(i, item_ids[lo:hi], texts[lo:hi]) for i, lo, hi in cuts]
    got = list(engine.embed_shards(iter(shards)))
    assert [shard for shard, _ in got] == [7, 3, 9]
    # the served encoder given the same ids: the text vector combined with the id's vector
    want = engine.encoder.embed(texts, item_ids)
    text_only = embed_by_length(engine.encoder.embed, texts)
    assert np.abs(want - text_only).max() > 0.1, "the id bundle changed no vector"
    np.testing.assert_allclose(np.concatenate([v for _, v in got]), want, atol=1e-5)
    assert engine.describe()["prefetch"] is prefetching


def test_local_engine_surfaces_a_tokenizer_error_from_the_prefetch_thread(untrained_bundle):
    engine = LocalEngine(
        untrained_bundle, runtime="onnxruntime", precision="fp32", threads=1, prefetch=True
    )
    ids = np.arange(2, dtype=np.int64)
    shards = [Shard(0, ids, ["red shirt", "blue hat"]), Shard(1, ids, ["green socks", None])]
    gen = engine.embed_shards(iter(shards))  # type: ignore[arg-type]
    shard, vectors = next(gen)
    assert shard == 0 and vectors.shape[0] == 2
    with pytest.raises(TypeError):
        next(gen)
    assert not [t for t in threading.enumerate() if t.name.startswith("prefetch")]


def test_streamed_tower_gives_the_served_encoders_vectors_in_batch_order(untrained_bundle):
    pytest.importorskip("openvino")
    engine = LocalEngine(
        untrained_bundle, runtime="openvino", precision="fp32", threads=2, batch_size=8, streams=2
    )
    engine.prepare([])
    assert engine.tower is not None and engine.encoder is not None
    assert engine.describe()["streams"] == 2
    texts = [f"{t} {i}" * (1 + i % 3) for i, t in enumerate(TEXTS * 5)]
    ids = np.full(len(texts), -1, np.int64)
    got = dict(
        engine.embed_shards(iter([Shard(0, ids[:20], texts[:20]), Shard(1, ids[20:], texts[20:])]))
    )
    want = engine.encoder.embed(texts)  # the served path: one request, fp32
    np.testing.assert_allclose(np.concatenate([got[0], got[1]]), want, atol=1e-4)
    tokens = tokenize_shard(engine.encoder.tokenizer, texts, 8)
    parts = engine.tower.run(tokens.batches)
    assert [len(p) for p in parts] == [len(ids) for ids, _ in tokens.batches]
    with pytest.raises(ValueError, match="streams"):
        LocalEngine(untrained_bundle, streams=0)


def test_streams_need_openvino_and_fall_back_to_one_request_otherwise(untrained_bundle):
    engine = LocalEngine(
        untrained_bundle, runtime="onnxruntime", precision="fp32", threads=1, streams=2
    )
    engine.prepare([])
    assert engine.tower is None and engine.describe()["streams"] == 1
    (shard, vectors), *_ = engine.embed_shards(iter([Shard(4, np.arange(len(TEXTS)), TEXTS)]))
    assert shard == 4 and len(vectors) == len(TEXTS)


def test_workers_embed_shards_in_parallel_and_in_order(untrained_id_bundle):
    texts = [f"{t} model {i}" * (1 + i % 3) for i, t in enumerate(TEXTS * 20)]
    item_ids = np.arange(len(texts), dtype=np.int64)
    kwargs = dict(runtime="onnxruntime", precision="fp32", batch_size=16)
    engine = LocalEngine(untrained_id_bundle, workers=2, threads=1, **kwargs)
    engine.prepare([])
    assert len(engine.encoders) == 2 and engine.describe()["workers"] == 2
    cuts = [(5, 0, 30), (2, 30, 31), (8, 31, 90), (1, 90, len(texts))]
    shards = [Shard(i, item_ids[lo:hi], texts[lo:hi]) for i, lo, hi in cuts]
    got = list(engine.embed_shards(iter(shards)))
    assert [shard for shard, _ in got] == [5, 2, 8, 1]
    assert engine.encoder is not None
    want = engine.encoder.embed(texts, item_ids)
    np.testing.assert_allclose(np.concatenate([v for _, v in got]), want, atol=1e-5)
    gen = engine.embed_shards(iter(shards * 5))
    next(gen)
    gen.close()  # stopped early: no worker thread outlives the generator
    assert not [t for t in threading.enumerate() if t.name.startswith("embed")]
    with pytest.raises(ValueError, match="workers"):
        LocalEngine(untrained_id_bundle, workers=0)
