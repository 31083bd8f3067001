"""Structure settings of the generator (bundles, steep popularity, vague items), the
MovieLens 100k layout and `towerserve data stats` (issue 9 item 7)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from client.cli import app
from towers.data import GenerateConfig, generate, item_texts, load_dataset
from towers.data.converters import convert
from towers.data.gen_items import TaxonomyArrays, make_items
from towers.data.gen_structure import VAGUE_EMPTY_COLUMNS, apply_bundles, make_bundles
from towers.data.generate import STRUCTURE_PRESETS, TABLE_NAMES
from towers.data.movielens_layout import write_movielens_100k
from towers.data.stats import HitRate, gini, structure_stats

#: A small default generation, hashed on the commit before the structure settings existed
#: (pyarrow 25.0.1): the Parquet and meta.json bytes, and the decoded tables as CSV.
HASHED = GenerateConfig(n_items=400, n_users=60, n_queries=40, seed=3)
HASHED_PYARROW = "25.0.1"
HASHED_FILES = "c0a777eaae2ee3a4a0b2f5a8c929ce4717d18eb629a6a5d568a80c2065a36b54"
HASHED_CONTENT = "e0dfe2ec7e73608d46000b66b3f5a5f353e1dc7870d54ac7186568ac5c356d4b"

MEDIUM = {"n_items": 1500, "n_users": 600, "n_queries": 40, "seed": 5}


@pytest.fixture(scope="module")
def text_and_identity(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The same sizes and seed, generated with each preset."""
    root = tmp_path_factory.mktemp("structure")
    out = []
    for name in ("text", "identity"):
        cfg = GenerateConfig(**MEDIUM, **STRUCTURE_PRESETS[name])  # type: ignore[arg-type]
        out.append(generate(cfg, root / name).root)
    return out[0], out[1]


def test_default_generation_is_byte_identical_to_before(tmp_path: Path) -> None:
    generate(HASHED, tmp_path)
    files, content = hashlib.sha256(), hashlib.sha256()
    for name in TABLE_NAMES:
        path = tmp_path / f"{name}.parquet"
        files.update(path.read_bytes())
        content.update(pq.read_table(path).to_pandas().to_csv(index=False).encode())
    meta = (tmp_path / "meta.json").read_bytes()
    files.update(meta)
    content.update(meta)
    assert content.hexdigest() == HASHED_CONTENT
    if pa.__version__ == HASHED_PYARROW:  # Parquet bytes also depend on the writer version
        assert files.hexdigest() == HASHED_FILES


def test_presets_and_meta(text_and_identity: tuple[Path, Path]) -> None:
    assert GenerateConfig(**STRUCTURE_PRESETS["text"]) == GenerateConfig()  # type: ignore[arg-type]
    _, identity = text_and_identity
    meta = json.loads((identity / "meta.json").read_text())
    for key, value in STRUCTURE_PRESETS["identity"].items():
        assert meta["config"][key] == value


def test_bundles_cross_types_and_redraw_within_them() -> None:
    rng = np.random.default_rng(0)
    tax = TaxonomyArrays.build()
    items = make_items(2000, rng, tax)
    bundles = make_bundles(items.popularity, 8, rng)
    assert sorted(bundles.members.tolist()) == list(range(2000))
    assert bundles.count.sum() == 2000
    # Members of a bundle are of unrelated types: few pairs share one.
    types = items.type_idx[bundles.members[: 8 * 250]].reshape(250, 8)
    distinct = np.array([len(set(row)) for row in types.tolist()])
    assert distinct.mean() > 7.5

    v_user = np.repeat(np.arange(50), 20)
    v_sess = np.repeat(np.arange(250), 4)
    v_item = rng.integers(0, 2000, len(v_user))
    out = apply_bundles(v_user, v_sess, v_item, 1.0, bundles, rng)
    user_first = np.r_[True, v_user[1:] != v_user[:-1]]
    sess_first = np.r_[True, v_sess[1:] != v_sess[:-1]]
    assert (out[user_first] == v_item[user_first]).all()  # a user's first view stays
    # With strength 1, every later view of a session is in the bundle of its first item,
    # and every session's first item is in the user's home bundle.
    sess_anchor = out[np.maximum.accumulate(np.where(sess_first, np.arange(len(out)), 0))]
    assert (bundles.bundle_of[out] == bundles.bundle_of[sess_anchor]).all()
    home = out[np.maximum.accumulate(np.where(user_first, np.arange(len(out)), 0))]
    assert (bundles.bundle_of[out] == bundles.bundle_of[home]).all()
    assert (apply_bundles(v_user, v_sess, v_item, 0.0, bundles, rng) == v_item).all()


def test_vague_items_say_little(text_and_identity: tuple[Path, Path]) -> None:
    text, identity = (load_dataset(p).items for p in text_and_identity)
    vague = identity["product_type"] == ""
    share = STRUCTURE_PRESETS["identity"]["vague_item_share"]
    assert abs(vague.mean() - share) < 0.05
    assert (identity.loc[vague, list(VAGUE_EMPTY_COLUMNS)] == "").all().all()
    assert (identity.loc[vague, "department"] != "").all()
    # The hidden type and brand of a vague item appear nowhere in its text.
    texts = item_texts(identity[vague])
    for (_, row), t in zip(text[vague].head(200).iterrows(), texts[:200]):
        assert row["product_type"] not in t and row["brand"] not in t
    assert (identity.loc[~vague, "title"] == text.loc[~vague, "title"]).all()


def test_identity_data_rewards_co_occurrence_and_text_data_less(
    text_and_identity: tuple[Path, Path],
) -> None:
    text, identity = (structure_stats(load_dataset(p)) for p in text_and_identity)
    for s in (text, identity):
        assert s.n_eval_users > 300
        assert set(s.hit_rates) == {"popularity", "co-occurrence", "text"}
    co, tx = identity.hit_rates["co-occurrence"], identity.hit_rates["text"]
    assert co.interval[0] > tx.interval[1]  # clearly, not within noise
    assert "rewards item identity" in identity.verdict()
    assert tx.rate < text.hit_rates["text"].rate
    assert co.rate > text.hit_rates["co-occurrence"].rate
    assert identity.gini_items > text.gini_items  # the steeper popularity curve


def test_item_zipf_steepens_popularity(tmp_path: Path) -> None:
    small = {"n_items": 600, "n_users": 200, "n_queries": 20, "seed": 1}
    ginis = []
    for zipf in (1.0, 2.5):
        root = generate(GenerateConfig(**small, item_zipf=zipf), tmp_path / str(zipf)).root
        ginis.append(structure_stats(load_dataset(root)).gini_items)
    assert ginis[1] > ginis[0] + 0.05


def test_gini_and_wilson_interval() -> None:
    assert gini(np.ones(10)) == pytest.approx(0.0)
    assert gini(np.r_[np.zeros(99), 1.0]) == pytest.approx(0.99)
    assert gini(np.zeros(3)) == 0.0
    hr = HitRate(0, 50)
    lo, hi = hr.interval
    assert lo == 0.0 and 0.05 < hi < 0.1  # Wilson stays informative at 0 hits
    assert HitRate(30, 100).interval == pytest.approx((0.2189, 0.3958), abs=1e-3)


def test_stats_rejects_bad_arguments(text_and_identity: tuple[Path, Path]) -> None:
    ds = load_dataset(text_and_identity[0])
    for kwargs in ({"k": 0}, {"max_users": 0}, {"cut_frac": 1.0}):
        with pytest.raises(ValueError):
            structure_stats(ds, **kwargs)  # type: ignore[arg-type]


def test_movielens_layout_round_trip(tmp_path: Path) -> None:
    cfg = GenerateConfig(n_items=300, n_users=50, n_queries=20, seed=2, vague_item_share=0.3)
    ds = load_dataset(generate(cfg, tmp_path / "gen").root)
    ml = write_movielens_100k(ds.items, ds.events, tmp_path / "gen" / "ml-100k")
    assert sorted(p.name for p in ml.iterdir()) == ["u.data", "u.item"]
    convert("movielens", tmp_path / "gen", tmp_path / "back")
    back = load_dataset(tmp_path / "back")

    assert back.items["item_id"].tolist() == ds.items["item_id"].tolist()
    assert back.items["title"].tolist() == ds.items["title"].tolist()
    cols = ["user_id", "item_id", "ts"]
    want = ds.events.assign(positive=ds.events["event_type"] != "view")
    got = back.events.assign(positive=back.events["event_type"] == "click")
    key = [*cols, "positive"]
    pd.testing.assert_frame_equal(
        got[key].sort_values(key).reset_index(drop=True),
        want[key].sort_values(key).reset_index(drop=True),
    )
    assert set(back.events["event_type"]) == {"view", "click"}


def test_cli_generate_identity_layout_and_stats(tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "d"
    args = ["data", "generate", "--out", str(out), "--items", "300", "--users", "80"]
    result = runner.invoke(
        app, [*args, "--queries", "20", "--structure", "identity", "--bundle-size", "4"]
        + ["--layout", "movielens"]
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    meta = json.loads((out / "meta.json").read_text())
    assert meta["config"]["bundle_size"] == 4 and meta["config"]["bundle_strength"] == 0.5
    assert (out / "ml-100k" / "u.data").is_file() and (out / "ml-100k" / "u.item").is_file()

    result = runner.invoke(app, ["data", "stats", "--data", str(out)])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    for needle in ("Gini", "popularity", "co-occurrence", "text", "HitRate@10"):
        assert needle in text

    result = runner.invoke(app, [*args, "--bundle-strength", "1.5"])
    assert result.exit_code == 1
    assert "--bundle-strength: Input should be less than or equal to 1" in result.output
    result = runner.invoke(app, ["data", "stats", "--data", str(out), "--cut", "0", "--k", "0"])
    assert result.exit_code == 1
    text = " ".join(result.output.split())
    assert "--cut must be strictly between 0 and 1" in text and "--k must be 1 or more" in text
    result = runner.invoke(app, ["data", "stats", "--data", str(tmp_path / "none")])
    assert result.exit_code == 1 and "not a directory" in " ".join(result.output.split())
