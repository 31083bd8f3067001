"""Publish a new model (and index) version into a running server, and roll back.

``towerserve serve`` runs tritonserver in explicit model-control mode with every model loaded.
:func:`publish` then:

1. checks the new bundle before anything is written or loaded: every file against its
   checksum (export.repository.validate_bundle), the embedding dimension against the served
   one, and, with ``index``, the index version folder against the bundle's model version,
   dimension, item count and checksum (towers/index_version.py); a failure raises
   :class:`PublishError` naming what is wrong, and the server is not touched;
2. pins every step of the ``recommend`` ensemble to the served version ``N`` (a repository
   written before this existed takes the latest, ``-1``);
3. writes version ``N+1`` of every model whose files depend on the model version
   (:data:`ENSEMBLE_MODELS` and :data:`SINGLE_MODELS`) beside ``N``, and re-embeds the items
   changed while serving (the ``catalog`` change log) with ``N+1``'s item tower, so its
   retriever serves them (again after step 6, for changes made meanwhile);
4. lets the ensemble's models serve both ``N`` and ``N+1`` (``version_policy``; the config's
   ``model_version`` parameter is emptied: each version folder's manifest says) and loads them
   through the model-control API; Triton keeps ``N`` serving while ``N+1`` loads;
5. re-pins the ensemble to ``N+1`` and reloads it: requests that started on ``N`` finish on
   ``N``, later ones run wholly on ``N+1``;
6. moves ``item_tower`` and ``catalog`` (not in the ensemble; one version loaded) to ``N+1``,
   and deletes version folders other than ``N`` and ``N+1``: ``N`` stays loaded for
   :func:`rollback`.

If Triton fails to load ``N+1`` (step 4), the configs are restored, ``N+1`` is unloaded and
removed, and the ensemble stays on ``N``. :func:`rollback` re-pins the ensemble (and the
single-version models) to the other loaded version, the changed items re-embedded with its
model first.

The control calls carry the key (gRPC header ``triton-grpc-protocol-towerserve-control-key``)
when the server was started with one (serving/launcher/control.py).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from export.repository import validate_bundle, write_model_version
from serving.bundle import BundleError, load_manifest
from serving.launcher.control import GRPC_CONTROL_HEADER
from serving.versions import ENSEMBLE, pinned_version, version_folders
from towers.bundle_contract import INDEX_FILE, MANIFEST_FILE
from towers.index_version import IndexVersion, IndexVersionError, check_index_version

log = logging.getLogger(__name__)

__all__ = [
    "ENSEMBLE_MODELS",
    "SINGLE_MODELS",
    "PublishError",
    "PublishResult",
    "publish",
    "rollback",
    "served_state",
]

#: The ensemble's steps: both the served and the previous version stay loaded.
ENSEMBLE_MODELS = ("tokenizer", "user_tower", "retriever", "reranker")
#: Models outside the ensemble whose files depend on the model version: one version loaded.
SINGLE_MODELS = ("item_tower", "catalog")


class PublishError(RuntimeError):
    """A publish or rollback that was refused or failed; the message says what and why, and
    whether the server still serves the old version (it does unless the message says else)."""


@dataclass(frozen=True)
class PublishResult:
    """What serves after :func:`publish` or :func:`rollback`: ``version`` (the folder number)
    and its ``model_version``; ``previous`` the other loaded version (``None`` when none);
    ``seconds`` the wall time of the whole operation."""

    version: int
    model_version: str
    previous: int | None
    seconds: float


@dataclass(frozen=True)
class ServedState:
    """The versions on disk: ``active`` (the ensemble's pin; the newest when unpinned),
    ``versions`` (folders of the ensemble's models, ascending) and their model versions."""

    active: int
    versions: tuple[int, ...]
    model_versions: dict[int, str]

    @property
    def previous(self) -> int | None:
        others = [v for v in self.versions if v != self.active]
        return others[-1] if others else None


def served_state(repository: Path) -> ServedState:
    """The :class:`ServedState` of a repository; :class:`PublishError` when it is not one
    towerserve wrote (no ensemble, or version folders that differ between its models)."""
    repository = Path(repository)
    if not (repository / ENSEMBLE / "config.pbtxt").is_file():
        raise PublishError(
            f"{repository} has no {ENSEMBLE}/config.pbtxt: pass the repository written by "
            "`towerserve export` that the server serves"
        )
    sets = {m: tuple(version_folders(repository, m)) for m in ENSEMBLE_MODELS}
    if len(set(sets.values())) != 1 or not sets["user_tower"]:
        raise PublishError(
            f"the ensemble's models in {repository} have different version folders {sets}: "
            "fix the repository by hand or export it again"
        )
    versions = sets["user_tower"]
    try:
        pin = pinned_version(repository)
    except ValueError as exc:
        raise PublishError(str(exc)) from exc
    active = versions[-1] if pin is None else pin
    if active not in versions:
        raise PublishError(f"{ENSEMBLE} is pinned to version {active}, which is not on disk")
    model_versions = {
        v: load_manifest(repository / "user_tower" / str(v)).model_version for v in versions
    }
    return ServedState(active, versions, model_versions)


# -- configs --------------------------------------------------------------------------------


def _read_config(path: Path) -> tuple[list[str], model_config_pb2.ModelConfig]:
    text = path.read_text()
    config = model_config_pb2.ModelConfig()
    text_format.Parse(text, config)
    header = []
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        header.append(line)
    return header, config


def _write_config(path: Path, header: list[str], config: model_config_pb2.ModelConfig) -> None:
    """Write a config atomically (a reader never sees half a file)."""
    body = text_format.MessageToString(config)
    fd, tmp = tempfile.mkstemp(prefix=".config.", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        f.write("\n".join([*header, body]) if header else body)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def _set_versions(repository: Path, model: str, versions: Iterable[int]) -> None:
    """Let ``model`` serve exactly ``versions``; its ``model_version`` parameter is emptied
    (each version folder's manifest names its own: serving/versions.py)."""
    path = Path(repository) / model / "config.pbtxt"
    header, config = _read_config(path)
    config.version_policy.Clear()
    config.version_policy.specific.versions.extend(sorted(set(versions)))
    if "model_version" in config.parameters:
        config.parameters["model_version"].string_value = ""
    _write_config(path, header, config)


def _pin_ensemble(repository: Path, version: int) -> None:
    path = Path(repository) / ENSEMBLE / "config.pbtxt"
    header, config = _read_config(path)
    for step in config.ensemble_scheduling.step:
        step.model_version = version
    _write_config(path, header, config)


# -- the server ----------------------------------------------------------------------------


class _Control:
    """The model-control calls of one server (gRPC), with the key header when given."""

    def __init__(self, url: str, control_key: str | None, timeout_s: float) -> None:
        import tritonclient.grpc as grpcclient

        self.url = url
        self.headers = {GRPC_CONTROL_HEADER: control_key} if control_key else None
        self.timeout_s = timeout_s
        self.client = grpcclient.InferenceServerClient(url)

    def _call(self, what: str, fn: Callable[[], object]) -> object:
        from tritonclient.utils import InferenceServerException

        try:
            return fn()
        except InferenceServerException as exc:
            message = exc.message() or str(exc)
            if "explicit model load" in message or "polling is enabled" in message:
                message += (
                    " (the server does not run in explicit model-control mode: start it with "
                    "`towerserve serve`)"
                )
            elif "restricted" in message.lower() or "unauthenticated" in message.lower():
                message += " (the server needs its control key: --control-key)"
            raise PublishError(f"{what} on {self.url} failed: {message}") from None

    def check_live(self) -> None:
        if not self._call("is_server_live", lambda: self.client.is_server_live()):
            raise PublishError(f"the server at {self.url} is not live")

    def load(self, model: str) -> None:
        start = time.monotonic()
        self._call(
            f"load_model({model})",
            lambda: self.client.load_model(
                model, headers=self.headers, client_timeout=self.timeout_s
            ),
        )
        log.info("loaded %s in %.1f s", model, time.monotonic() - start)

    def ready(self, model: str, version: int) -> bool:
        return bool(
            self._call(
                f"is_model_ready({model}, {version})",
                lambda: self.client.is_model_ready(model, str(version)),
            )
        )

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.client.close()


#: Lock file in the repository (hidden: not a model) held while a publish or rollback runs.
LOCK_FILE = ".towerserve-publish.lock"


@contextlib.contextmanager
def _exclusive(repository: Path) -> Iterator[None]:
    """Hold the repository's publish lock, or raise :class:`PublishError` at once when another
    publish or rollback holds it (an advisory ``flock``: released when that process ends)."""
    with (Path(repository) / LOCK_FILE).open("a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise PublishError(
                f"another publish or rollback is running on {repository}: wait for it"
            ) from None
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


# -- checks ---------------------------------------------------------------------------------


def _check_new(
    repository: Path, bundle: Path, index: Path | None, state: ServedState
) -> tuple[str, IndexVersion | None]:
    """The new model version and index manifest, after every check (nothing written yet)."""
    try:
        manifest = validate_bundle(bundle)
    except BundleError as exc:
        raise PublishError(f"the new bundle {bundle} is refused: {exc}") from exc
    served = load_manifest(repository / "user_tower" / str(state.active))
    if manifest.dim != served.dim:
        raise PublishError(
            f"the new bundle's vectors have dimension {manifest.dim}, the served ones "
            f"{served.dim}: a new dimension needs a new repository (towerserve export) and a "
            "restart, not a publish"
        )
    version = None
    if index is not None:
        try:
            version = check_index_version(
                index, model_version=manifest.model_version, dim=manifest.dim
            )
        except IndexVersionError as exc:
            raise PublishError(f"the index version {index} is refused: {exc}") from exc
        if version.n_items != manifest.n_items:
            raise PublishError(
                f"the index version {index} holds {version.n_items} items, the bundle "
                f"{manifest.n_items}: the reranker and the user tower read the bundle's "
                "catalog; export a bundle of that catalog instead"
            )
    elif manifest.model_version == served.model_version:
        raise PublishError(
            f"model version {manifest.model_version!r} is already served (version "
            f"{state.active}); pass --index to publish a new index of it"
        )
    return manifest.model_version, version


def _use_index(folder: Path, index: Path, version: IndexVersion) -> None:
    """Put the index version's ``index.faiss`` into a retriever version folder and record its
    parameters and checksum in that folder's own ``manifest.json`` copy."""
    target = folder / INDEX_FILE
    target.unlink()
    try:
        os.link(index / INDEX_FILE, target)
    except OSError:
        shutil.copy2(index / INDEX_FILE, target)
    path = folder / MANIFEST_FILE
    doc = json.loads(path.read_text())
    doc["index"] = dict(version.index)
    doc.setdefault("checksums", {})[INDEX_FILE] = version.index_sha256
    path.unlink()  # a hard link to the bundle's manifest: never write through it
    path.write_text(json.dumps(doc, indent=2))


# -- publish and rollback ---------------------------------------------------------------------


def _carry_item_changes(repository: Path, version: int, say: Callable[[str], None]) -> None:
    """Re-embed the items changed while serving (the ``catalog`` change log,
    serving/item_changes.py) with version ``version``'s item tower, so that version's
    retriever serves them (``ItemChangeLog.carry_forward``). Nothing to do without a change
    log or a pending item; a failure is reported and the switch goes on (that version then
    skips those items, warned, until they are changed again or an index rebuild folds them
    in), because a publish or rollback must not stop half-way over it."""
    from serving.backend import int_parameter
    from serving.graphs import runtime_from_params
    from serving.item_changes import ItemChangeLog, log_path
    from serving.item_tower import ItemEncoder

    folder = repository / "catalog" / str(version)
    if not folder.is_dir():
        return
    _, config = _read_config(repository / "catalog" / "config.pbtxt")
    params = {key: value.string_value for key, value in config.parameters.items()}
    path = log_path(folder, params)
    if not path.is_file():
        return
    encoders: list[ItemEncoder] = []

    def embed(texts: list[str], item_ids: np.ndarray) -> np.ndarray:
        if not encoders:  # opened only when some item needs it
            threads = int_parameter(params, "intra_op_threads", 1)
            encoders.append(
                ItemEncoder.from_dir(folder, runtime=runtime_from_params(params, threads))
            )
        return encoders[0].embed(texts, item_ids)

    try:
        model_version = load_manifest(folder).model_version
        changes = ItemChangeLog(path)
        try:
            n = changes.carry_forward(model_version, embed)
        finally:
            changes.close()
    except Exception as exc:  # reported, never a half-done switch
        log.exception("re-embedding the item changes for version %d failed", version)
        say(f"items changed while serving were not re-embedded for version {version}: {exc}")
        return
    if n:
        say(f"re-embedded {n} items changed while serving with model {model_version}")


def _publish(
    repository: Path,
    bundle: Path,
    *,
    url: str = "localhost:8001",
    index: Path | None = None,
    control_key: str | None = None,
    timeout_s: float = 300.0,
    progress: Callable[[str], None] | None = None,
) -> PublishResult:
    """:func:`publish` with the repository's lock held."""
    start = time.monotonic()
    say = progress or (lambda line: log.info("%s", line))
    repository, bundle = Path(repository).resolve(), Path(bundle)
    state = served_state(repository)
    model_version, index_version = _check_new(repository, bundle, index, state)
    control = _Control(url, control_key, timeout_s)
    try:
        control.check_live()
        old, new = state.active, max(state.versions) + 1
        if pinned_version(repository) is None:
            say(f"pinning {ENSEMBLE} to the served version {old}")
            _pin_ensemble(repository, old)
            control.load(ENSEMBLE)
        say(f"writing version {new} ({model_version}) beside {old}")
        written: list[Path] = []
        changed: list[str] = []  # models whose config names version new
        try:
            for model in (*ENSEMBLE_MODELS, *SINGLE_MODELS):
                stale = repository / model / str(new)
                if stale.exists():  # left by an interrupted publish: never loaded
                    shutil.rmtree(stale)
                written.append(write_model_version(bundle, repository, model, new))
            if index is not None and index_version is not None:
                _use_index(repository / "retriever" / str(new), index, index_version)
            _carry_item_changes(repository, new, say)
            for model in ENSEMBLE_MODELS:
                say(f"loading {model} version {new}")
                _set_versions(repository, model, [old, new])
                changed.append(model)
                control.load(model)
                if not control.ready(model, new):
                    raise PublishError(f"{model} version {new} loaded but is not ready")
        except BaseException as exc:
            say(f"version {new} failed; {ENSEMBLE} stays on {old}")
            _undo(repository, control, new, changed, written)
            if isinstance(exc, PublishError):
                raise PublishError(f"{exc}; version {old} keeps serving") from exc
            raise
        say(f"switching {ENSEMBLE} to version {new}")
        _pin_ensemble(repository, new)
        try:
            control.load(ENSEMBLE)
        except PublishError:
            _pin_ensemble(repository, old)  # the server kept the old ensemble
            _undo(repository, control, new, changed, written)
            raise
        for model in SINGLE_MODELS:
            say(f"moving {model} to version {new}")
            _set_versions(repository, model, [new])
            control.load(model)
        _carry_item_changes(repository, new, say)  # the changes made during the switch
        for model in (*ENSEMBLE_MODELS, *SINGLE_MODELS):
            for v in version_folders(repository, model):
                if v not in (old, new):
                    shutil.rmtree(repository / model / str(v), ignore_errors=True)
    finally:
        control.close()
    return PublishResult(new, model_version, old, time.monotonic() - start)


def _undo(
    repository: Path, control: _Control, new: int, changed: list[str], written: list[Path]
) -> None:
    """Back to the versions before ``new``: the ``changed`` models' configs restored and
    reloaded (``new`` unloaded), its folders removed."""
    for model in changed:
        policy = [v for v in version_folders(repository, model) if v != new]
        _set_versions(repository, model, policy)
        try:
            control.load(model)
        except PublishError as exc:
            log.warning("could not reload %s on its old versions: %s", model, exc)
    for folder in written:
        shutil.rmtree(folder, ignore_errors=True)


def _rollback(
    repository: Path,
    *,
    url: str = "localhost:8001",
    control_key: str | None = None,
    timeout_s: float = 300.0,
    progress: Callable[[str], None] | None = None,
) -> PublishResult:
    """:func:`rollback` with the repository's lock held."""
    start = time.monotonic()
    repository = Path(repository).resolve()
    state = served_state(repository)
    target = state.previous
    if target is None:
        raise PublishError(
            f"{repository} holds only version {state.active}: nothing to roll back to"
        )
    control = _Control(url, control_key, timeout_s)
    say = progress or (lambda line: log.info("%s", line))
    try:
        control.check_live()
        for model in ENSEMBLE_MODELS:
            if not control.ready(model, target):
                raise PublishError(
                    f"{model} version {target} is not loaded: roll back by publishing that "
                    "bundle again"
                )
        _carry_item_changes(repository, target, say)
        _pin_ensemble(repository, target)
        try:
            control.load(ENSEMBLE)
        except PublishError:
            _pin_ensemble(repository, state.active)
            raise
        for model in SINGLE_MODELS:
            if target in version_folders(repository, model):
                _set_versions(repository, model, [target])
                control.load(model)
        _carry_item_changes(repository, target, say)  # the changes made during the switch
    finally:
        control.close()
    return PublishResult(
        target, state.model_versions[target], state.active, time.monotonic() - start
    )


def publish(
    repository: Path,
    bundle: Path,
    *,
    url: str = "localhost:8001",
    index: Path | None = None,
    control_key: str | None = None,
    timeout_s: float = 300.0,
    progress: Callable[[str], None] | None = None,
) -> PublishResult:
    """Publish ``bundle`` (and optionally the index version folder ``index``) as the next
    version of the server at ``url`` serving ``repository`` (module docstring).

    ``timeout_s`` bounds each model load (seconds); ``progress`` is called with a short line
    per step. One publish or rollback runs at a time per repository. Raises
    :class:`PublishError` (the old version keeps serving unless the message says otherwise).
    """
    repository = Path(repository).resolve()
    served_state(repository)  # a clear error before the lock file is created
    with _exclusive(repository):
        return _publish(
            repository,
            bundle,
            url=url,
            index=index,
            control_key=control_key,
            timeout_s=timeout_s,
            progress=progress,
        )


def rollback(
    repository: Path,
    *,
    url: str = "localhost:8001",
    control_key: str | None = None,
    timeout_s: float = 300.0,
    progress: Callable[[str], None] | None = None,
) -> PublishResult:
    """Switch the server back to the other loaded version (the one before the last
    :func:`publish`; a second rollback switches forward again); items changed while serving
    are re-embedded with its model first. ``progress`` receives one line per step. Raises
    :class:`PublishError` when there is no other version or another publish is running."""
    repository = Path(repository).resolve()
    served_state(repository)
    with _exclusive(repository):
        return _rollback(
            repository,
            url=url,
            control_key=control_key,
            timeout_s=timeout_s,
            progress=progress,
        )
