"""The ``ray`` engine on a local Ray instance: the same vectors as the local engine."""

from __future__ import annotations

import numpy as np
import pytest

from client.embed import LocalEngine, read_job_vectors, run_embed

pytest.importorskip("ray", reason="the ray extra is not installed (pip install '.[ray]')")


@pytest.mark.slow
def test_ray_engine_matches_the_local_engine(
    untrained_id_bundle, tmp_path, make_catalog, texts_for
) -> None:
    from client.embed.ray_engine import RayEngine

    n = 500
    catalog = make_catalog(tmp_path / "c.parquet", list(range(n)), texts_for(n))
    engine = RayEngine(
        untrained_id_bundle, runtime="onnxruntime", precision="fp32", threads=1, batch_size=64
    )
    try:
        result = run_embed(catalog, tmp_path / "emb", engine, shard_size=120)
    finally:
        engine.close()
    manifest, ids, vecs, _ = read_job_vectors(tmp_path / "emb")
    assert result.shards_embedded == 5 and manifest.engine["name"] == "ray"
    assert ids.tolist() == list(range(n))
    local = LocalEngine(untrained_id_bundle, runtime="onnxruntime", precision="fp32", threads=1)
    local.prepare([])
    assert local.encoder is not None
    want = local.encoder.embed(texts_for(n), ids)  # with the items' learned id vectors
    assert np.abs(want - local.encoder.embed(texts_for(n))).max() > 0.1
    np.testing.assert_allclose(vecs, want, atol=1e-5)
