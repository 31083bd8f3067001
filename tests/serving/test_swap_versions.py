"""Unit tests of the hot-swap pieces that need no server: version folders and the ensemble
pin (serving/versions.py), the SERVED_BY trail and its mixed-version refusal, the control-key
rules of the launcher (serving/launcher/control.py) and publish's checks before it connects
(client/publish.py)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from serving.errors import RequestError
from serving.launcher.control import (
    CONTROL_HEADER,
    ControlKeyError,
    is_loopback,
    resolve_control_key,
    restricted_args,
)
from serving.versions import (
    SERVED_BY,
    extend_trail,
    pinned_version,
    served_by,
    trail_labels,
    version_folders,
    version_label,
    version_parameters,
)
from tests.serving.conftest import make_bundle

KEY = "k" * 16


@pytest.fixture
def repo(repository: Path, tmp_path: Path) -> Path:
    """A private copy of the session repository."""
    return Path(shutil.copytree(repository, tmp_path / "repo"))


def test_an_exported_repository_is_pinned_to_version_1(repo: Path) -> None:
    assert pinned_version(repo) == 1
    assert version_folders(repo, "user_tower") == [1]
    assert version_label(repo / "user_tower" / "1") == "1:test-v1"
    text = (repo / "recommend" / "config.pbtxt").read_text()
    (repo / "recommend" / "config.pbtxt").write_text(text.replace("model_version: 1", "-1", 1))
    with pytest.raises(ValueError, match="config"):
        pinned_version(repo)
    (repo / "recommend" / "config.pbtxt").write_text(
        text.replace("model_version: 1", "model_version: -1")
    )
    assert pinned_version(repo) is None


def test_steps_pinned_to_different_versions_are_refused(repo: Path) -> None:
    path = repo / "recommend" / "config.pbtxt"
    path.write_text(path.read_text().replace("model_version: 1", "model_version: 2", 1))
    with pytest.raises(ValueError, match=r"different versions \[1, 2\]"):
        pinned_version(repo)


def test_an_empty_model_version_parameter_comes_from_the_folder(repo: Path) -> None:
    folder = repo / "retriever" / "1"
    assert version_parameters(folder, {"model_version": "", "max_k": "5"}) == {
        "model_version": "test-v1",
        "max_k": "5",
    }
    assert version_parameters(folder, {"model_version": "x"})["model_version"] == "x"


def test_the_trail_grows_per_stage_and_the_retriever_refuses_another_model() -> None:
    first = extend_trail({}, "2:v2")
    assert trail_labels(first) == ["2:v2"]
    assert trail_labels(extend_trail({SERVED_BY: first}, "2:v2", require_same_model=True)) == [
        "2:v2",
        "2:v2",
    ]
    with pytest.raises(RequestError, match=r"mixed model versions: .*'v1'.*'v2'"):
        extend_trail({SERVED_BY: extend_trail({}, "1:v1")}, "2:v2", require_same_model=True)
    # another version folder of the same model (a new index of it) is not mixed
    extend_trail({SERVED_BY: extend_trail({}, "1:v2")}, "2:v2", require_same_model=True)


def test_served_by_wraps_a_stage(repo: Path) -> None:
    run = served_by(lambda t: {"OUT": np.ones(1)}, repo / "reranker" / "1")
    out = run({SERVED_BY: np.array([b"1:test-v1", b"1:test-v1"], dtype=np.object_)})
    assert trail_labels(out[SERVED_BY]) == ["1:test-v1"] * 3 and out["OUT"].tolist() == [1.0]


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.1", True), ("127.0.0.5", True), ("::1", True), ("localhost", True)]
    + [("0.0.0.0", False), ("10.1.2.3", False), ("::", False), ("example.com", False)],
)
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_a_non_loopback_host_needs_a_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TOWERSERVE_CONTROL_KEY", raising=False)
    assert resolve_control_key("127.0.0.1", None) is None
    with pytest.raises(ControlKeyError, match="needs a key"):
        resolve_control_key("0.0.0.0", None)
    with pytest.raises(ControlKeyError, match="at least 16"):
        resolve_control_key("0.0.0.0", "short")
    with pytest.raises(ControlKeyError, match="letters, digits"):
        resolve_control_key("0.0.0.0", "x" * 16 + " ,=")
    assert resolve_control_key("0.0.0.0", KEY) == KEY
    monkeypatch.setenv("TOWERSERVE_CONTROL_KEY", KEY)
    assert resolve_control_key("0.0.0.0", None) == KEY


def test_the_server_command_restricts_the_control_apis(tmp_path: Path) -> None:
    from serving.triton import TritonServer

    with pytest.raises(ControlKeyError, match="control_key"):
        TritonServer(tmp_path, host="0.0.0.0", model_control_mode="explicit")
    TritonServer(tmp_path, host="0.0.0.0")  # mode none: nothing can be loaded remotely
    assert restricted_args(None) == []
    spec = f"model-repository,shared-memory,trace,logging:{CONTROL_HEADER}={KEY}"
    server = TritonServer(tmp_path, host="0.0.0.0", model_control_mode="explicit", control_key=KEY)
    assert server.command()[-2:] == [
        f"--grpc-restricted-protocol={spec}",
        f"--http-restricted-api={spec}",
    ]


def test_serve_refuses_a_public_host_without_a_key(monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from client.cli import app

    monkeypatch.delenv("TOWERSERVE_CONTROL_KEY", raising=False)
    result = CliRunner().invoke(app, ["serve", "--host", "0.0.0.0", "--repository", "/nowhere"])
    assert result.exit_code == 2
    assert "needs a key" in " ".join(result.output.split())


# -- publish's checks, before it connects (the url leads nowhere) -------------------------------


def test_publish_refuses_what_does_not_fit_before_connecting(
    repo: Path, bundle: Path, tmp_path: Path
) -> None:
    from client.publish import PublishError, publish
    from towers.index_version import build_index_version

    nowhere = "127.0.0.1:9"
    with pytest.raises(PublishError, match="already served"):
        publish(repo, bundle, url=nowhere)
    other_dim = tmp_path / "dim"
    make_bundle(other_dim, model_version="test-dim")
    import json

    doc = json.loads((other_dim / "manifest.json").read_text())
    doc["dim"] = 16
    (other_dim / "manifest.json").write_text(json.dumps(doc))
    with pytest.raises(PublishError, match="dimension 16, the served ones 8"):
        publish(repo, other_dim, url=nowhere)
    v2 = make_bundle(tmp_path / "v2", seed=1, model_version="test-v2")
    index = tmp_path / "index"
    build_index_version(
        np.load(v2 / "item_embeddings.npy"),
        np.load(v2 / "item_ids.npy"),
        index,
        model_version="test-v1",
        kind="flat",
    )
    with pytest.raises(PublishError, match=r"refused: model_version: .*'test-v1'.*'test-v2'"):
        publish(repo, v2, url=nowhere, index=index)
    (index / "index.faiss").write_bytes((index / "index.faiss").read_bytes()[:100])
    with pytest.raises(PublishError, match="refused: truncated"):
        publish(repo, bundle, url=nowhere, index=index)
    assert version_folders(repo, "retriever") == [1]


def test_publish_cli_reports_a_refusal(repo: Path, bundle: Path) -> None:
    from typer.testing import CliRunner

    from client.cli import app

    runner = CliRunner()
    args = ["--repository", str(repo), "-u", "127.0.0.1:9"]
    result = runner.invoke(app, ["publish", "--bundle", str(bundle), *args])
    assert result.exit_code == 1 and "already served" in " ".join(result.output.split())
    result = runner.invoke(app, ["publish", "--bundle", "/nowhere", *args])
    assert result.exit_code == 2 and "is not a folder" in result.output
    result = runner.invoke(app, ["rollback", *args])
    assert result.exit_code == 1 and "nothing to roll back to" in " ".join(result.output.split())


def test_one_publish_at_a_time(repo: Path, bundle: Path) -> None:
    from client.publish import PublishError, _exclusive, publish, rollback

    with _exclusive(repo):
        with pytest.raises(PublishError, match="another publish or rollback is running"):
            publish(repo, bundle, url="127.0.0.1:9")
        with pytest.raises(PublishError, match="another publish or rollback is running"):
            rollback(repo, url="127.0.0.1:9")
    with pytest.raises(PublishError, match="already served"):  # released
        publish(repo, bundle, url="127.0.0.1:9")


def test_repository_params_follow_the_pinned_version(repo: Path, tmp_path: Path) -> None:
    """What an in-process pipeline reads (serving.stage_params) after a publish's layout:
    version 2 beside 1, the ensemble pinned to 2, model_version taken from the folder."""
    from client.publish import _pin_ensemble, _set_versions, served_state
    from export.repository import write_model_version
    from serving.stage_params import repository_params

    v2 = make_bundle(tmp_path / "v2", seed=1, model_version="test-v2")
    for model in ("tokenizer", "user_tower", "retriever", "reranker"):
        folder = write_model_version(v2, repo, model, 2)
        assert (folder / "__pycache__").is_dir()  # compiled: the stub does not write it
        _set_versions(repo, model, [1, 2])
    _pin_ensemble(repo, 2)
    folder, params = repository_params(repo, "retriever")
    assert folder == repo / "retriever" / "2" and params["model_version"] == "test-v2"
    folder, params = repository_params(repo, "item_tower")  # outside the ensemble: one version
    assert folder == repo / "item_tower" / "1" and params["model_version"] == "test-v1"
    state = served_state(repo)
    assert (state.active, state.versions, state.previous) == (2, (1, 2), 1)
    assert state.model_versions == {1: "test-v1", 2: "test-v2"}
    text = (repo / "user_tower" / "config.pbtxt").read_text()
    assert "versions: 1" in text and "versions: 2" in text
    assert text.startswith("# Stage 2")  # the template's comment is kept
