"""The batch re-embedding job (``towerserve embed``): catalog Parquet -> vector shards.

client/embed/catalog.py reads and validates the catalog, client/embed/engines.py and
client/embed/ray_engine.py run the item tower (``local``, ``triton``, ``ray``),
client/embed/shards.py writes the shards and manifest, client/embed/job.py checkpoints and
resumes.
"""

from __future__ import annotations

from client.embed.catalog import BAD_REASONS, Catalog, CatalogError, read_catalog
from client.embed.engines import EngineError, LocalEngine, TritonEngine
from client.embed.job import EmbedJobError, JobResult, run_embed
from client.embed.shards import read_embed_manifest, read_job_vectors

__all__ = [
    "BAD_REASONS",
    "Catalog",
    "CatalogError",
    "EmbedJobError",
    "EngineError",
    "JobResult",
    "LocalEngine",
    "TritonEngine",
    "read_catalog",
    "read_embed_manifest",
    "read_job_vectors",
    "run_embed",
]
