"""The wheel carries the Triton model templates, and export finds them in an installed package.

Builds the wheel from a copy of the sources (so no stale ``build/`` folder of the checkout
leaks into it), installs it with ``--no-deps`` into a fresh virtual environment, and runs
``write_repository`` there with this environment's site-packages on ``PYTHONPATH`` (for
numpy, tritonclient ...) and the working directory outside the checkout, so the source tree
cannot be what is found. About 10 s.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import textwrap
import zipfile
from pathlib import Path

from tests.export.test_repository import make_bundle

ROOT = Path(__file__).resolve().parents[2]
#: What a wheel is built from: the project file, the README it names, and the packages.
SOURCES = (
    "pyproject.toml",
    "README.md",
    "towers",
    "export",
    "client",
    "serving",
    "model_repository",
)


def _templates() -> set[str]:
    """Every committed template, as ``model_repository/...`` paths."""
    folder = ROOT / "model_repository"
    files = [*folder.glob("*/config.pbtxt"), *folder.glob("*/1/model.py")]
    return {p.relative_to(ROOT).as_posix() for p in files}


def _build_wheel(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    src.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "artifacts", "*.egg-info")
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, src / name, ignore=ignore)
        else:
            shutil.copy2(ROOT / name, src / name)
    out = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q"]
        + ["-w", str(out), str(src)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = out.glob("towerserve-*.whl")
    return wheel


def test_wheel_carries_the_templates_and_export_finds_them(tmp_path: Path) -> None:
    templates = _templates()
    assert len(templates) >= 11  # 6 configs + 5 model.py files
    wheel = _build_wheel(tmp_path)
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
    missing = templates - names
    assert not missing, f"the wheel lacks templates {sorted(missing)}"

    venv = tmp_path / "venv"
    base_python = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base_python, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps"]
        + ["--no-index", str(wheel)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    bundle = make_bundle(tmp_path / "bundle")
    snippet = textwrap.dedent(
        """
        import json, sys
        from pathlib import Path
        from export.repository import TEMPLATES, write_repository
        repo = write_repository(Path(sys.argv[1]), Path(sys.argv[2]))
        print(json.dumps({"templates": str(TEMPLATES),
                          "models": sorted(p.name for p in repo.iterdir()),
                          "model_py": sorted(str(p) for p in repo.glob("*/1/model.py"))}))
        """
    )
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env["PYTHONPATH"] = sysconfig.get_paths()["purelib"]  # dependencies only, no project
    done = subprocess.run(
        [str(python), "-c", snippet, str(bundle), str(tmp_path / "repo")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    installed = Path(result["templates"])
    assert installed.is_relative_to(venv.resolve()), result["templates"]
    assert not installed.is_relative_to(ROOT)
    assert result["models"] == sorted({Path(t).parts[1] for t in templates})
    assert len(result["model_py"]) == sum(t.endswith("model.py") for t in templates)
