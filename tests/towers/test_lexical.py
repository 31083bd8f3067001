"""The BM25 index behind the BM25 baseline and the blend's lexical feature."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from towers.lexical import LEXICAL_FILES, LexicalIndex

TEXTS = [
    "Walnut bookcase with five shelves",
    "Oak dining table",
    "Walnut coffee table, oak legs",
    "Red cotton t-shirt",
]


def test_scores_follow_word_matches() -> None:
    index = LexicalIndex.build(TEXTS)
    assert index.n_items == 4
    s = index.all_scores("walnut TABLE")
    assert s.dtype == np.float32 and s.shape == (4,)
    assert s[2] > s[0] > 0 and s[1] > 0 and s[3] == 0  # both words beat one word
    np.testing.assert_allclose(index.scores("walnut table", np.array([2, 3])), s[[2, 3]])
    top = index.top("walnut table", 10).tolist()
    assert top[0] == 2 and sorted(top) == [0, 1, 2]  # item 3 shares no word: left out
    assert index.top("walnut table", 1).tolist() == [2]


def test_stop_words_unknown_words_and_empty_queries_score_nothing() -> None:
    index = LexicalIndex.build(TEXTS)
    assert index.words("the and of") == []
    assert index.words("zebra walnut") == ["walnut"]
    for query in ("", "   ", "the", "zebra"):
        assert not index.all_scores(query).any()
        assert index.top(query, 3).size == 0


def test_save_and_load(tmp_path: Path) -> None:
    index = LexicalIndex.build(TEXTS)
    index.save(tmp_path / "lex")
    assert sorted(p.name for p in (tmp_path / "lex").iterdir()) == sorted(LEXICAL_FILES)
    back = LexicalIndex.load(tmp_path / "lex")
    np.testing.assert_allclose(back.all_scores("oak table"), index.all_scores("oak table"))
    (tmp_path / "lex" / LEXICAL_FILES[2]).unlink()
    with pytest.raises(FileNotFoundError, match="lexical index"):
        LexicalIndex.load(tmp_path / "lex")
