"""The artifact bundle's manifest as the served models read it: a re-export of the contract.

The manifest class, the file names and the checks live in :mod:`towers.bundle_contract`
(numpy-only, shared with training, export and evaluation); this module keeps the names the
stages and tests have always imported. Each Triton model's version folder (``<model>/1/``)
holds a copy of the bundle's ``manifest.json`` next to the bundle files the model needs, so
every stage can tell which model version it serves and refuse files from another one.
"""

from __future__ import annotations

from towers.bundle_contract import (
    MANIFEST_FILE,
    BundleError,
    Manifest,
    check_model_version,
    load_manifest,
    sha256,
    verify_files,
)

__all__ = [
    "MANIFEST",
    "BundleError",
    "Manifest",
    "check_model_version",
    "load_manifest",
    "sha256",
    "verify_files",
]

#: Old name of :data:`towers.bundle_contract.MANIFEST_FILE`.
MANIFEST = MANIFEST_FILE
