"""The ``events`` model's stage, built from its version folder and config parameters."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from serving.backend import float_parameter, int_parameter
from serving.bundle import check_model_version, load_manifest
from serving.events.recorder import EventPolicy, EventRecorder
from serving.events.settings import EventSettings, open_store
from serving.events.store import EventStoreError
from towers.bundle_contract import ITEM_IDS_FILE

log = logging.getLogger(__name__)

__all__ = ["event_recorder", "policy_from_params"]


def policy_from_params(params: Mapping[str, str]) -> EventPolicy:
    """``max_skew_s``, ``rate_per_user_s``, ``burst_per_user`` and ``max_batch`` from config
    parameters (defaults: :class:`EventPolicy`'s)."""
    default = EventPolicy()
    return EventPolicy(
        max_skew_s=float_parameter(params, "max_skew_s", default.max_skew_s),
        rate_per_user_s=float_parameter(params, "rate_per_user_s", default.rate_per_user_s),
        burst_per_user=int_parameter(params, "burst_per_user", default.burst_per_user),
        max_batch=int_parameter(params, "max_batch", default.max_batch),
    )


def event_recorder(folder: Path, params: Mapping[str, str]) -> EventRecorder:
    """The recorder of version folder ``folder`` (``item_ids.npy``, ``manifest.json``) writing
    to the store ``params`` name (repository: ``folder``'s grandparent). Raises
    :class:`EventStoreError` when events are ``off`` or the store cannot be opened, and
    ``ValueError`` for a bad parameter or another model version."""
    folder = Path(folder).resolve()
    check_model_version(load_manifest(folder), params.get("model_version"), f"{folder}")
    settings = EventSettings.from_params(params, folder.parent.parent)
    store = open_store(settings)
    if store is None:
        raise EventStoreError(
            "live events are off in this repository (events_store off): serve with "
            "`towerserve serve --events sqlite` or `--events redis`"
        )
    recorder = EventRecorder(
        store, np.load(folder / ITEM_IDS_FILE), policy=policy_from_params(params)
    )
    log.info("events: %r, %d catalog items, %s", store, len(recorder.items), recorder.policy)
    return recorder
