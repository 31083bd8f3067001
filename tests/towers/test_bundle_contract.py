"""The bundle contract (towers/bundle_contract.py): the manifest, checksums and the blend.

The slow test builds a real bundle from the session's tiny model, lays it out as a Triton
repository, loads the reranker stage from its version folder and evaluation's scorer from the
artifacts, and checks both give the same blended scores for the same candidates.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from towers.bundle_contract import (
    BLEND_FEATURES,
    BLEND_FILE,
    LEGACY_BLEND_FEATURES,
    MANIFEST_FILE,
    Blend,
    BundleError,
    Manifest,
    blend_features,
    checksums,
    load_manifest,
    verify_files,
)


def make_manifest(**overrides: object) -> Manifest:
    fields: dict[str, object] = {
        "model_version": "v1",
        "dim": 8,
        "n_items": 3,
        "created_at": "2026-01-01T00:00:00+00:00",
        "index": {"type": "flat"},
        "recency_tau_s": 3600.0,
    }
    fields.update(overrides)
    return Manifest(**fields)  # type: ignore[arg-type]


def test_manifest_round_trips_through_its_file(tmp_path: Path) -> None:
    manifest = make_manifest(
        checksums={"a.npy": "0" * 64},
        prior={"weight": 0.05, "default": -1.0, "at_ts": 1_700_000_000, "half_life_s": 9.0},
        onnx_parity_max_abs_diff={"reranker": 1e-6},
        embedding_precision="bf16",
    )
    manifest.write(tmp_path)
    assert load_manifest(tmp_path) == manifest
    assert Manifest.from_dict(manifest.to_dict()) == manifest


def test_old_manifests_read_with_defaults(tmp_path: Path) -> None:
    doc = {"model_version": "v0", "dim": 4, "n_items": 2, "index": {}, "recency_tau_s": 1.0}
    (tmp_path / MANIFEST_FILE).write_text(json.dumps(doc))
    manifest = load_manifest(tmp_path)
    assert (manifest.max_k, manifest.n_candidates, manifest.prior, manifest.checksums) == (
        100,
        100,
        {},
        {},
    )


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"dim": 4}, "lacks model_version"),
        (
            {"model_version": "v", "dim": 0, "n_items": 1, "index": {}, "recency_tau_s": 1},
            "dim must be >= 1",
        ),
        (
            {"model_version": "v", "dim": "x", "n_items": 1, "index": {}, "recency_tau_s": 1},
            "wrong type",
        ),
    ],
)
def test_bad_manifests_name_the_file(tmp_path: Path, doc: dict, message: str) -> None:
    (tmp_path / MANIFEST_FILE).write_text(json.dumps(doc))
    with pytest.raises(BundleError, match=message) as info:
        load_manifest(tmp_path)
    assert str(tmp_path / MANIFEST_FILE) in str(info.value)


def test_checksums_skip_the_manifest_and_verify_catches_a_changed_file(tmp_path: Path) -> None:
    (tmp_path / "a.bin").write_bytes(b"abc")
    (tmp_path / "b.bin").write_bytes(b"def")
    manifest = make_manifest(checksums=checksums(tmp_path))
    manifest.write(tmp_path)
    assert sorted(manifest.checksums) == ["a.bin", "b.bin"]
    verify_files(tmp_path, manifest, ["a.bin", "b.bin"])
    (tmp_path / "b.bin").write_bytes(b"xyz")
    with pytest.raises(BundleError, match="b.bin does not match its checksum"):
        verify_files(tmp_path, manifest, ["b.bin"])
    with pytest.raises(BundleError, match="c.bin is missing"):
        verify_files(tmp_path, manifest, ["c.bin"])


def test_blend_scores_in_feature_order_and_round_trips(tmp_path: Path) -> None:
    blend = Blend(np.array([1.0, 2.0, 3.0, 4.0], np.float32), 0.5)
    rerank, retrieval, popularity, lexical = (np.array([v, 0.0], np.float32) for v in (1, 2, 3, 4))
    np.testing.assert_allclose(
        blend.score(rerank, retrieval, popularity, lexical), [0.5 + 1 + 4 + 9 + 16, 0.5]
    )
    np.testing.assert_allclose(blend.score(rerank, retrieval, popularity), [0.5 + 14, 0.5])
    assert blend_features(rerank, retrieval, popularity).shape == (2, len(BLEND_FEATURES))
    blend.write(tmp_path)
    again = Blend.from_json(tmp_path / BLEND_FILE)
    np.testing.assert_array_equal(again.weights, blend.weights)
    assert again.bias == blend.bias and again.uses_lexical


def test_legacy_three_feature_blend_reads_with_lexical_weight_zero() -> None:
    doc = {"features": list(LEGACY_BLEND_FEATURES), "weights": [1, 2, 3], "bias": 0}
    blend = Blend.from_dict(doc)
    np.testing.assert_array_equal(blend.weights, [1, 2, 3, 0])
    assert not blend.uses_lexical


@pytest.mark.parametrize(
    "doc",
    [
        {"features": ["rerank"], "weights": [1], "bias": 0},
        {"features": list(BLEND_FEATURES), "weights": [1, 2], "bias": 0},
        {"features": list(BLEND_FEATURES), "weights": [1, 2, 3, 4]},
    ],
)
def test_bad_blends_are_refused(doc: dict) -> None:
    with pytest.raises(BundleError):
        Blend.from_dict(doc)


def test_blend_features_refuse_columns_of_different_lengths() -> None:
    with pytest.raises(ValueError, match="one value per candidate"):
        blend_features(np.zeros(2), np.zeros(2), np.zeros(3))


@pytest.mark.slow
def test_served_reranker_and_evaluation_blend_the_same(tiny_model, tmp_path: Path) -> None:
    from export.bundle import build_bundle
    from export.repository import write_repository
    from serving.reranker import MAX_BUDGET_MS, Reranker
    from towers.evaluation.systems import BlendScorer, load
    from towers.finetune import embed_queries

    bundle = tmp_path / "bundle"
    manifest = build_bundle(tiny_model["artifacts"], tiny_model["data"], bundle)
    assert load_manifest(bundle) == manifest
    repo = write_repository(bundle, tmp_path / "repository", warmup=False)
    served = Reranker.from_dir(
        repo / "reranker" / "1", model_version=manifest.model_version, calibrate=False
    )
    m = load(tiny_model["artifacts"], tiny_model["data"])
    m.bf16 = False  # the served graph computes in fp32
    np.testing.assert_array_equal(served.blend.weights, m.blend.weights)
    assert served.blend.bias == m.blend.bias
    # training fitted the blend for requests without a query too, and it travels to serving
    report = json.loads((tiny_model["artifacts"] / "train_report.json").read_text())
    assert served.no_query_blend is not None and report["no_query_blend"] is not None
    assert served.no_query_blend.weights.tolist() == report["no_query_blend"]["weights"]
    assert "a=0" in report["no_query_blend"]["validation_recall@50"]
    scorer = BlendScorer(m)

    queries = m.ds.queries["query_text"].astype(str).tolist()[:5]
    assert queries
    n = 24
    for query in queries:
        vec = embed_queries(m.user_tower, m.tok, [query], bf16=False)
        retrieval, ids = m.index.search(vec, n)
        expected = scorer.scores(query, ids[0], retrieval[0])
        result = served.rerank(
            served.context_tokens(query, np.zeros(0, np.int64)),
            ids[0],
            retrieval[0],
            k=n,
            budget_ms=MAX_BUDGET_MS,
            query=query,
        )
        assert result.n_scored == n
        by_id = dict(zip(result.item_ids.tolist(), result.scores.tolist()))
        got = np.array([by_id[int(i)] for i in ids[0]], np.float32)
        # ONNX Runtime against PyTorch, both fp32: measured 5e-7 at most on a quick model
        np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-3)
