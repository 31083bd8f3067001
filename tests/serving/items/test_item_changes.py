"""Unit tests of serving/item_changes.py: the change log, the delta, the checker and the
retriever's merge of main-index and delta results (real SQLite, real FAISS)."""

from __future__ import annotations

import multiprocessing
import re
from pathlib import Path

import faiss
import numpy as np
import pytest

from serving.errors import RequestError
from serving.item_changes import (
    CatalogStage,
    ChangeChecker,
    DeltaWatcher,
    ItemChange,
    ItemChangeLog,
    ItemDelta,
    default_path,
)
from serving.retriever import Retriever

DIM = 4
VERSION = "v1"


def unit(*values: float) -> np.ndarray:
    vec = np.asarray(values, np.float32)
    return vec / np.linalg.norm(vec)


def main_index(n: int = 20) -> tuple[faiss.Index, np.ndarray]:
    rng = np.random.default_rng(0)
    vecs = rng.normal(size=(n, DIM)).astype(np.float32)
    faiss.normalize_L2(vecs)
    index = faiss.IndexIDMap(faiss.IndexFlatIP(DIM))
    ids = np.arange(100, 100 + n, dtype=np.int64)
    index.add_with_ids(vecs, ids)
    return index, vecs


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_default_path_is_beside_the_repository(tmp_path: Path) -> None:
    assert default_path(tmp_path / "repo") == tmp_path / "repo.items.sqlite"


def test_the_log_keeps_each_items_latest_change(tmp_path: Path) -> None:
    log = ItemChangeLog(tmp_path / "items.sqlite")
    assert log.version() == 0
    v1 = log.append([ItemChange(1, "add", "a", unit(1, 0, 0, 0))], VERSION)
    v2 = log.append(
        [ItemChange(1, "update", "b", unit(0, 1, 0, 0)), ItemChange(105, "delete")], VERSION
    )
    assert v2 > v1 > 0
    delta = log.snapshot(VERSION, DIM)
    assert delta.version == v2
    assert delta.ids.tolist() == [1] and delta.texts == ["b"]
    assert delta.deleted.tolist() == [105]
    ids, scores = delta.search(unit(0, 1, 0, 0)[None], 5)
    assert ids.tolist() == [1] and scores[0] == pytest.approx(1.0)
    log.append([ItemChange(1, "delete")], VERSION)  # a delete after an add wins
    delta = log.snapshot(VERSION, DIM)
    assert len(delta.ids) == 0 and delta.deleted.tolist() == [1, 105]


def test_upserts_of_another_model_version_are_skipped(tmp_path: Path) -> None:
    log = ItemChangeLog(tmp_path / "items.sqlite")
    log.append([ItemChange(1, "add", "a", unit(1, 0, 0, 0))], "old")
    log.append([ItemChange(7, "delete")], "old")
    delta = log.snapshot(VERSION, DIM)
    assert len(delta.ids) == 0 and delta.deleted.tolist() == [7]


def test_a_model_change_carries_the_live_items_forward(tmp_path: Path) -> None:
    """``carry_forward`` embeds every live upsert with the new model and appends it as that
    model's change: both models' deltas then serve the item (each with its own vector),
    deletes stay deletes, and a second pass has nothing left to do."""
    log = ItemChangeLog(tmp_path / "items.sqlite")
    log.append([ItemChange(1, "add", "a", unit(1, 0, 0, 0))], "old")
    log.append([ItemChange(2, "add", "b", unit(0, 1, 0, 0)), ItemChange(7, "delete")], "old")
    calls: list[tuple[list[str], list[int]]] = []

    def embed(texts: list[str], ids: np.ndarray) -> np.ndarray:
        calls.append((texts, ids.tolist()))
        return np.tile(np.asarray([0.0, 0.0, 2.0, 0.0], np.float32), (len(texts), 1))

    assert len(log.snapshot("new", DIM).ids) == 0  # nothing of the new model yet
    assert log.carry_forward("new", embed) == 2
    assert calls == [(["a", "b"], [1, 2])]
    new = log.snapshot("new", DIM)
    assert new.ids.tolist() == [1, 2] and new.texts == ["a", "b"]
    assert new.deleted.tolist() == [7]
    ids, scores = new.search(unit(0, 0, 1, 0)[None], 5)  # the new model's vectors, normalised
    assert sorted(ids.tolist()) == [1, 2] and scores == pytest.approx([1.0, 1.0])
    old = log.snapshot("old", DIM)  # the old model (a rollback) still has its own vectors
    assert old.ids.tolist() == [1, 2]
    ids, scores = old.search(unit(1, 0, 0, 0)[None], 5)
    assert ids.tolist()[0] == 1 and scores[0] == pytest.approx(1.0)
    assert log.carry_forward("new", embed) == 0 and len(calls) == 1
    log.append([ItemChange(2, "update", "c", unit(0, 0, 0, 1))], "old")  # text changed
    assert log.carry_forward("new", embed) == 1 and calls[-1] == (["c"], [2])
    assert log.snapshot("new", DIM).texts == ["a", "c"]


def test_a_change_made_while_carrying_forward_is_kept(tmp_path: Path) -> None:
    """An item updated while ``carry_forward`` embeds its old text keeps the update: the
    re-embedded old text is not written over it."""
    log = ItemChangeLog(tmp_path / "items.sqlite")
    log.append([ItemChange(1, "add", "a", unit(1, 0, 0, 0))], "old")

    def embed(texts: list[str], ids: np.ndarray) -> np.ndarray:
        log.append([ItemChange(1, "update", "z", unit(0, 1, 0, 0))], "old")  # meanwhile
        return np.ones((len(texts), DIM), np.float32)

    assert log.carry_forward("new", embed) == 0
    assert log.snapshot("old", DIM).texts == ["z"]


def _write_and_exit(path: str) -> None:
    ItemChangeLog(Path(path)).append([ItemChange(3, "delete")], VERSION)


def test_an_acknowledged_change_is_seen_by_another_process(tmp_path: Path) -> None:
    path = tmp_path / "items.sqlite"
    reader = ItemChangeLog(path)
    proc = multiprocessing.get_context("spawn").Process(target=_write_and_exit, args=(str(path),))
    proc.start()
    proc.join(60)
    assert proc.exitcode == 0
    assert reader.snapshot(VERSION, DIM).deleted.tolist() == [3]


def test_the_watcher_rereads_only_after_its_poll_interval(tmp_path: Path) -> None:
    log = ItemChangeLog(tmp_path / "items.sqlite")
    clock = Clock()
    watcher = DeltaWatcher(log, model_version=VERSION, dim=DIM, poll_s=0.5, clock=clock)
    assert len(watcher.current()) == 0
    log.append([ItemChange(100, "delete")], VERSION)
    assert len(watcher.current()) == 0  # within the poll interval: the old delta
    clock.t = 0.6
    assert watcher.current().deleted.tolist() == [100]


def test_retriever_drops_deleted_and_superseded_hits_and_merges_the_delta(
    tmp_path: Path,
) -> None:
    index, vecs = main_index()
    retriever = Retriever(index, max_k=10, n_candidates=5)
    query = vecs[3:4].copy()
    before, _ = retriever.search(query, 5)
    assert before[0] == 103
    log = ItemChangeLog(tmp_path / "items.sqlite")
    retriever.delta = DeltaWatcher(log, model_version=VERSION, dim=DIM, poll_s=0.0)
    new_vec = (query[0] * 0.999 + 0.001).astype(np.float32)
    new_vec /= np.linalg.norm(new_vec)
    log.append(
        [
            ItemChange(103, "delete"),
            ItemChange(500, "add", "new", new_vec),
            ItemChange(int(before[1]), "update", "moved away", -query[0]),
        ],
        VERSION,
    )
    ids, scores = retriever.search(query, 5)
    assert ids[0] == 500
    assert 103 not in ids.tolist()
    assert int(before[1]) not in ids.tolist()  # its new vector points away from the query
    assert len(ids) == 5 and np.all(np.diff(scores) <= 1e-6)
    # a recommendation that excludes its history leaves out an added item in it too
    retriever.exclude_recent = 1000
    history = np.array([500, int(before[2])], np.int64)
    ids, _ = retriever.search(query, 5, has_query=False, history_ids=history)
    assert len(ids) == 5 and not set(ids.tolist()) & {500, 103, int(before[1]), int(before[2])}


def test_checker_refuses_a_bad_batch_whole_with_every_problem(tmp_path: Path) -> None:
    log = ItemChangeLog(tmp_path / "items.sqlite")
    watcher = DeltaWatcher(log, model_version=VERSION, dim=DIM, poll_s=0.0)
    checker = ChangeChecker(np.array([1, 2, 3]), watcher)
    checker.check([4, 1, 2], ["add", "update", "delete"], ["x", "y", ""])  # all good
    cases = {
        "already exists (use update)": ([1], ["add"], ["x"]),
        "is not in the catalog": ([9], ["delete"], [""]),
        "appears more than once": ([4, 4], ["add", "add"], ["x", "y"]),
        "the text is empty": ([1], ["update"], ["  "]),
        "is not one of add, update, delete": ([1], ["remove"], [""]),
        "item ids must be >= 0": ([-1], ["add"], ["x"]),
        "ITEM_IDS is empty": ([], [], []),
        "one entry per change": ([1], ["add", "add"], ["x"]),
    }
    for message, (ids, ops, texts) in cases.items():
        with pytest.raises(RequestError, match=re.escape(message)):
            checker.check(ids, ops, texts)
    log.append([ItemChange(1, "delete")], VERSION)
    with pytest.raises(RequestError, match="not in the catalog"):
        checker.check([1], ["update"], ["x"])  # deleted: gone
    checker.check([1], ["add"], ["back"])  # and may be added again


def test_catalog_stage_embeds_upserts_and_logs_the_batch(tmp_path: Path) -> None:
    log = ItemChangeLog(tmp_path / "items.sqlite")
    watcher = DeltaWatcher(log, model_version=VERSION, dim=DIM, poll_s=0.0)

    embedded: list[tuple[list[str], list[int]]] = []

    def embed(texts: list[str], item_ids: np.ndarray) -> np.ndarray:
        embedded.append((texts, item_ids.tolist()))
        return np.array([[len(t), 1.0, 0.0, 0.0] for t in texts], np.float32)

    stage = CatalogStage(log, ChangeChecker(np.array([1]), watcher), embed, model_version=VERSION)
    out = stage.infer(
        {
            "ITEM_IDS": np.array([7, 1], np.int64),
            "OPS": np.array([b"add", b"delete"], object),
            "ITEM_TEXTS": np.array([b"seven", b""], object),
        }
    )
    assert out["N_APPLIED"].tolist() == [2] and out["VERSION"][0] == log.version()
    assert embedded == [(["seven"], [7])]  # each upsert's id goes with its text
    delta = watcher.current()
    assert delta.ids.tolist() == [7] and delta.deleted.tolist() == [1]
    ids, scores = delta.search(unit(5, 1, 0, 0)[None], 1)
    assert ids.tolist() == [7] and scores[0] == pytest.approx(1.0, abs=1e-5)  # normalised
    with pytest.raises(RequestError, match="none applied"):
        stage.infer(
            {
                "ITEM_IDS": np.array([8, 9], np.int64),
                "OPS": np.array([b"add", b"delete"], object),
                "ITEM_TEXTS": np.array([b"eight", b""], object),
            }
        )
    assert log.snapshot(VERSION, DIM).ids.tolist() == [7]  # nothing of the bad batch


def test_empty_delta_merges_to_the_main_results() -> None:
    delta = ItemDelta.empty(DIM)
    ids, scores = delta.merge(
        np.array([1, 2]),
        np.array([0.9, 0.5], np.float32),
        np.zeros(0, np.int64),
        np.zeros(0, np.float32),
        5,
    )
    assert ids.tolist() == [1, 2]


def test_reranker_tables_gain_the_delta_rows_and_keep_base_rows_numbered(
    teacher_tokenizer,
) -> None:
    from serving.catalog import ItemTexts
    from serving.item_changes import PaddedLexical, texts_with_delta
    from towers.lexical import LexicalIndex
    from towers.text import item_token_lists

    titles = ["red shirt", "blue jeans", "green hat"]
    tokens = item_token_lists(teacher_tokenizer, titles)
    offsets = np.concatenate([[0], np.cumsum([len(t) for t in tokens])])
    base = ItemTexts(
        np.array([10, 11, 12]),
        offsets,
        np.concatenate(tokens),
        titles,
        np.array([0.5, 0.2, 0.1], np.float32),
    )
    delta = ItemDelta.build(
        np.array([11, 99]),
        np.stack([unit(1, 0, 0, 0), unit(0, 1, 0, 0)]),
        np.array([12]),
        texts=["black jeans", "purple umbrella"],
    )
    merged = texts_with_delta(base, delta, teacher_tokenizer)
    rows, known = merged.rows.lookup(np.array([10, 11, 99, 12]))
    assert known.all()
    assert [merged.titles[r] for r in rows] == [
        "red shirt",
        "black jeans",
        "purple umbrella",
        "green hat",
    ]
    assert rows[0] == 0 and rows[3] == 2  # base rows keep their numbers
    want = item_token_lists(teacher_tokenizer, ["purple umbrella"])[0]
    assert merged.item_tokens(int(rows[2])).tolist() == want.tolist()
    lexical = PaddedLexical(LexicalIndex.build(titles), len(merged.rows))
    scores = lexical.scores("jeans", rows)
    assert scores[0] == 0 and scores[3] == 0 and scores[2] == 0  # new rows: 0
    assert lexical.scores("zzz", rows).tolist() == [0, 0, 0, 0]


def test_an_unopenable_log_turns_item_changes_off_instead_of_failing(tmp_path: Path) -> None:
    from serving.item_changes import optional_watcher

    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    params = {"items_path": str(blocker / "items.sqlite"), "model_version": VERSION}
    assert optional_watcher(tmp_path, params, dim=DIM) is None
