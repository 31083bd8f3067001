"""The catalog a benchmark runs on, and the model exported over it, each built once and cached.

- catalog: ``towerserve data generate`` with ``catalog_items`` items (users and queries stay at
  their own, demo-size counts), in ``<cache>/catalog-i{items}-u{users}-q{queries}-s{seed}``;
- bundle: the trained model in ``artifacts`` exported over that catalog (ONNX graphs, item
  vectors, FAISS index, ...), in ``<cache>/bundle-<model>-<catalog>-<index>``, keyed by the
  model version and a hash of its train report, so a retrained model is exported again;
- repository: the Triton repository written from the bundle (cheap: rewritten every run).

The artifacts folder is only read. When its retriever prior (the trending popularity of each
item) was fitted on another catalog, the bundle would leave it out and homepage requests would
rank by cosine alone, which is not the served path; so a *shadow* artifacts folder is made in
the cache: symlinks to every artifact, and a prior recounted over the benchmark catalog's
events with the model's fitted weight and half-life.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

#: Written last into a finished cache folder; a folder without it is rebuilt.
DONE_FILE = "bench_cache.json"


@dataclass(frozen=True)
class Prepared:
    """What the benchmark serves: data set, bundle and repository folders."""

    data_dir: Path
    bundle: Path
    repository: Path
    model_version: str
    n_items: int
    index: dict[str, object]
    catalog_reused: bool
    bundle_reused: bool
    prior: str  # "artifacts", "recounted" or "none"
    serving: dict[str, str] = field(default_factory=dict)  # engine and precisions served


def _done(folder: Path, key: dict[str, object]) -> bool:
    path = folder / DONE_FILE
    if not path.is_file():
        return False
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(doc, dict) and all(doc.get(k) == v for k, v in key.items())


def _mark_done(folder: Path, key: dict[str, object]) -> None:
    (folder / DONE_FILE).write_text(json.dumps(key, indent=2))


def catalog_dir(cache_dir: Path, items: int, users: int, queries: int, seed: int) -> Path:
    """Cache folder of a generated catalog."""
    return cache_dir / f"catalog-i{items}-u{users}-q{queries}-s{seed}"


def prepare_catalog(
    cache_dir: Path, *, items: int, users: int, queries: int, seed: int
) -> tuple[Path, bool]:
    """The generated data set of that size (built unless cached) and whether it was reused."""
    from towers.data import GenerateConfig, generate

    folder = catalog_dir(cache_dir, items, users, queries, seed)
    key: dict[str, object] = {"items": items, "users": users, "queries": queries, "seed": seed}
    if _done(folder, key):
        log.info("catalog %s reused", folder)
        return folder, True
    shutil.rmtree(folder, ignore_errors=True)
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    cfg = GenerateConfig(n_items=items, n_users=users, n_queries=queries, seed=seed)
    generate(cfg, tmp, progress=True)
    _mark_done(tmp, key)
    os.replace(tmp, folder)
    log.info("catalog %s generated", folder)
    return folder, False


def _train_report(artifacts: Path) -> dict[str, object]:
    from towers.bundle_contract import TRAIN_REPORT_FILE

    path = artifacts / TRAIN_REPORT_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} missing: {artifacts} holds no trained model (run `towerserve train`)"
        )
    doc: dict[str, object] = json.loads(path.read_text())
    return doc


def _model_key(artifacts: Path) -> tuple[str, str]:
    from towers.bundle_contract import TRAIN_REPORT_FILE

    report = _train_report(artifacts)
    digest = hashlib.sha256((artifacts / TRAIN_REPORT_FILE).read_bytes()).hexdigest()[:10]
    return str(report.get("model_version", "model")), digest


def shadow_artifacts(artifacts: Path, data_dir: Path, folder: Path) -> tuple[Path, str]:
    """``artifacts`` itself when its prior fits the catalog in ``data_dir`` (or it has none),
    else a folder of symlinks to it with the prior recounted over that catalog's events.

    Returns the folder to export from and where its prior comes from (``artifacts``,
    ``recounted`` or ``none``).
    """
    from towers.bundle_contract import PRIOR_META_FILE, PRIOR_VALUES_FILE
    from towers.data import cut_ts_at, load_dataset
    from towers.prior import compute_prior, load_prior, save_prior

    prior = load_prior(artifacts)
    if prior is None:
        return artifacts, "none"
    ds = load_dataset(data_dir)
    if len(prior.values) == len(ds.items):
        return artifacts, "artifacts"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    for entry in artifacts.iterdir():
        if entry.name in (PRIOR_VALUES_FILE, PRIOR_META_FILE, "bundle"):
            continue
        (folder / entry.name).symlink_to(entry.resolve())
    ts = ds.events["ts"]
    at_ts = prior.at_ts
    if len(ts) and not int(ts.min()) < at_ts <= int(ts.max()):
        at_ts = cut_ts_at(ds.events, 0.75)
    item_ids = ds.items["item_id"].to_numpy()
    recounted = compute_prior(ds.events, item_ids, at_ts, prior.half_life_s, prior.weight)
    save_prior(recounted, folder)
    log.info(
        "prior recounted over %d items as of %d (weight %.3f kept from %s)",
        len(item_ids),
        at_ts,
        prior.weight,
        artifacts,
    )
    return folder, "recounted"


def prepare_bundle(
    artifacts: Path,
    data_dir: Path,
    cache_dir: Path,
    *,
    catalog_key: str,
    index: str = "auto",
    nprobe: int = 16,
) -> tuple[Path, bool, str]:
    """The bundle of ``artifacts`` over the catalog ``data_dir`` (exported unless cached):
    its folder, whether it was reused, and where its prior came from."""
    from export.bundle import build_bundle
    from export.onnx import GRAPH_FORMAT

    version, digest = _model_key(artifacts)
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in version)
    folder = cache_dir / f"bundle-{safe}-{digest}-{catalog_key}-{index}-np{nprobe}"
    key: dict[str, object] = {
        "artifacts": str(artifacts.resolve()),
        "train_report_sha256": digest,
        "catalog": catalog_key,
        "index": index,
        "nprobe": nprobe,
        "graph_format": GRAPH_FORMAT,
    }
    if _done(folder, key) and (folder / "bundle").is_dir():
        log.info("bundle %s reused", folder / "bundle")
        prior = json.loads((folder / DONE_FILE).read_text()).get("prior", "?")
        return folder / "bundle", True, str(prior)
    (folder / DONE_FILE).unlink(missing_ok=True)
    folder.mkdir(parents=True, exist_ok=True)
    source, prior_from = shadow_artifacts(artifacts, data_dir, folder / "artifacts")
    build_bundle(source, data_dir, folder / "bundle", index_kind=index, nprobe=nprobe)
    _mark_done(folder, {**key, "prior": prior_from})  # the prior's origin, read back on reuse
    return folder / "bundle", False, prior_from
