"""The wheel works without the source tree: built from a copy of the checkout, installed into a
fresh virtual environment, it migrates, imports the demo corpus and serves every page.

No network and no llama.cpp recompile: the wheel is built with this environment's setuptools
(--no-build-isolation) and installed with --no-deps; the new environment sees the dependencies
already installed here through a .pth file (a plain path line, so this environment's editable
humanlm is not picked up: its finder is only installed by a .pth in a real site directory).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

from webapp.config import SOURCE_ROOT, asset_dir

REPO = Path(__file__).resolve().parent.parent
VENDOR_JS = "vendor/socket.io.min.js"  # what templates/rooms/*.html load (`make assets`)
SKIP_COPY = shutil.ignore_patterns(
    ".git", ".venv", "node_modules", "__pycache__", "*.egg-info", "build", "dist", "instance",
    "tmp", ".pytest_cache", ".ruff_cache",
)

# Runs inside the new environment, from a directory outside the checkout.
CLIENT_SCRIPT = r"""
import json, sys
from pathlib import Path
import webapp
from webapp.app import create_app

out = {"webapp": webapp.__file__, "pages": {}}
app = create_app({"TESTING": True})
out["template_folder"] = str(Path(app.root_path, app.template_folder))
out["static_folder"] = app.static_folder
client = app.test_client()
for url in sys.argv[1:]:
    response = client.get(url)
    out["pages"][url] = [response.status_code, response.get_data(as_text=True)[:400000]]
    response.close()
print(json.dumps(out))
"""


def _python_packages(root: Path) -> set[str]:
    return {
        ".".join(init.parent.relative_to(root).parts)
        for top in ("webapp", "analysis")
        for init in (root / top).rglob("__init__.py")
        if "__pycache__" not in init.parts
    }


def _run(args: list, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=180,
        check=False,
    )
    assert result.returncode == 0, f"{args}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    return result


def test_the_source_tree_uses_its_own_folders():
    assert SOURCE_ROOT == REPO
    for name in ("templates", "static", "migrations"):
        assert asset_dir(name) == REPO / name


def test_wheel_installs_and_serves_every_page_without_the_source_tree(tmp_path):
    if not (REPO / "static" / VENDOR_JS).is_file():
        pytest.fail(f"static/{VENDOR_JS} is missing: run `make assets` before packaging")

    # Build from a copy, so build/ and *.egg-info never land in the shared checkout.
    src = tmp_path / "src"
    shutil.copytree(REPO, src, ignore=SKIP_COPY)
    dist = tmp_path / "dist"
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
          "-q", "-w", dist, src], cwd=tmp_path)
    (wheel,) = dist.glob("humanlm-*.whl")

    names = set(zipfile.ZipFile(wheel).namelist())
    packaged = {n.rsplit("/", 1)[0].replace("/", ".") for n in names if n.endswith("/__init__.py")}
    missing = _python_packages(REPO) - packaged
    assert not missing, f"add {sorted(missing)} to [tool.setuptools] packages in pyproject.toml"
    templates = {p.relative_to(REPO / "templates").as_posix()
                 for p in (REPO / "templates").rglob("*.html")}
    assert {f"webapp/_assets/templates/{t}" for t in templates} <= names
    for needed in (f"webapp/_assets/static/{VENDOR_JS}", "webapp/_assets/static/css/app.css",
                   "webapp/_assets/migrations/env.py", "webapp/_assets/migrations/script.py.mako",
                   "webapp/data/demo_corpus.jsonl"):
        assert needed in names
    assert not any("node_modules" in n or "__pycache__" in n for n in names)
    assert {f"webapp/_assets/migrations/versions/{p.name}"
            for p in (REPO / "migrations" / "versions").glob("*.py")} <= names

    # A fresh environment with the wheel; the dependencies come from this one.
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=False)
    bin_dir = env_dir / "bin"
    _run([sys.executable, "-m", "pip", "--python", bin_dir / "python", "install", "--no-deps",
          "--no-index", "-q", wheel], cwd=tmp_path)
    site = Path(_run([bin_dir / "python", "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                     cwd=tmp_path).stdout.strip())
    (site / "_humanlm_test_deps.pth").write_text(sysconfig.get_path("purelib") + "\n")

    # From a directory outside the checkout, with no humanlm settings: the defaults must work.
    run_dir = tmp_path / "elsewhere"
    run_dir.mkdir()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("HUMANLM_", "FLASK_", "PYTHON")) and k not in {
               "DATABASE_URL", "SOCKETIO_MESSAGE_QUEUE", "VIRTUAL_ENV"}}
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    _run(["humanlm", "db", "upgrade"], cwd=run_dir, env=env)
    imported = _run(["humanlm", "corpus", "import-demo"], cwd=run_dir, env=env)
    assert "added 45 documents" in imported.stdout
    assert (run_dir / "instance" / "humanlm.db").is_file()
    assert (run_dir / "instance" / "secret_key").is_file()

    pages = {"/": "<html", "/play": "<html", "/rooms/new": "<html", "/join": "<html",
             "/research/login": "<form"}
    assets = {"/static/css/app.css": "{", "/static/js/play.js": "function",
              f"/static/{VENDOR_JS}": ""}
    shown = _run([bin_dir / "python", "-c", CLIENT_SCRIPT, *pages, *assets], cwd=run_dir, env=env)
    result = json.loads(shown.stdout)
    installed = (env_dir / "lib").resolve()
    assert Path(result["webapp"]).resolve().is_relative_to(installed)
    assert Path(result["template_folder"]).resolve().is_relative_to(installed)
    assert Path(result["static_folder"]).resolve().is_relative_to(installed)
    for url, marker in {**pages, **assets}.items():
        status, body = result["pages"][url]
        assert status == 200, (url, body[:500])
        assert marker in body, url
    # The home page lists the imported demo corpus, the pages link their own assets.
    assert "demo" in result["pages"]["/"][1]
    assert "/static/css/app.css" in result["pages"]["/play"][1]
    assert f"/static/{VENDOR_JS}" in result["pages"]["/join"][1]
