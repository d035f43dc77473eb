"""An exported model loads outside the repository (issue 16): through the bundle's own predict.py, and
through the project installed as a package, each in a separate Python process whose sys.path lacks the repo."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def trained(digits_dir, tiny_config, tmp_path_factory):
    """A tiny digits run, the app's own top-3 predictions for four images, and a folder outside the repo."""
    from core import techniques
    from core.results.loading import load_model

    run_dir = Path(techniques.fit(tiny_config(digits_dir, image_size=32, epochs=1))["run_dir"])
    images = [sorted((digits_dir / c).iterdir())[0] for c in ("0", "3", "7", "9")]
    outside = tmp_path_factory.mktemp("outside")
    assert REPO not in outside.parents  # the whole point: nothing below the checkout
    for p in images:
        shutil.copy(p, outside / p.name)
    app = load_model(run_dir).predict([str(p) for p in images], top_k=3)
    return run_dir, [p.name for p in images], app, outside


def _clean_env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(extra)
    return env


def _assert_same(app: list[dict], got: list[dict]) -> None:
    assert [g["label"] for g in got] == [a["label"] for a in app]
    for g, a in zip(got, app):
        assert g["confidence"] == pytest.approx(a["confidence"], abs=1e-5)
        assert [lbl for lbl, _ in g["top_k"]] == [lbl for lbl, _ in a["top_k"]]


def test_the_bundles_predict_py_run_outside_the_repo_predicts_what_the_app_predicts(trained):
    from core.results import formats

    run_dir, names, app, outside = trained
    bundle = formats.export(run_dir, "bundle")
    folder = outside / "bundle"
    with zipfile.ZipFile(bundle) as z:
        z.extractall(folder)
    # -I: no PYTHONPATH, no user site, not even the script's folder or the cwd on sys.path
    proc = subprocess.run([sys.executable, "-I", str(folder / "predict.py"), *names, "--top-k", "3"], cwd=outside,
                          env=_clean_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    _assert_same(app, [json.loads(line) for line in proc.stdout.splitlines()])


def test_load_model_from_the_installed_package_outside_the_repo_predicts_what_the_app_predicts(trained, tmp_path):
    run_dir, names, app, outside = trained
    # Build from a copy, so pip's build/ and *.egg-info never land in the checkout.
    src = tmp_path / "src"
    shutil.copytree(REPO / "core", src / "core", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "requirements.txt", "README.md"):
        shutil.copy(REPO / name, src / name)
    target = tmp_path / "site"
    pip = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                          "--target", str(target), str(src)], capture_output=True, text=True, timeout=300)
    assert pip.returncode == 0, pip.stderr[-2000:]
    assert (target / "core" / "results" / "loading.py").exists()
    shutil.copy(run_dir / "best.safetensors", outside / "model.safetensors")

    code = "\n".join([
        "import json, sys",
        "from pathlib import Path",
        "assert all(Path(p or '.').resolve() != Path(sys.argv[1]) for p in sys.path), sys.path",
        "import core",
        "from core.results.loading import load_model",
        "pred = load_model('model.safetensors').predict(sys.argv[2:], top_k=3)",
        "print(json.dumps({'core': core.__file__, 'pred': pred}))"])
    # -P: the cwd is not put on sys.path; the package comes from PYTHONPATH=target alone
    proc = subprocess.run([sys.executable, "-P", "-c", code, str(REPO), *names], cwd=outside,
                          env=_clean_env(PYTHONPATH=str(target)), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.splitlines()[-1])
    assert Path(out["core"]).is_relative_to(target)
    _assert_same(app, out["pred"])


def test_the_export_step_shows_the_install_line_with_the_load_snippet_and_the_bundle_commands(trained):
    from streamlit.testing.v1 import AppTest

    run_dir = trained[0]
    at = AppTest.from_file(str(REPO / "streamlit_app.py"), default_timeout=90)
    at.query_params["job"] = run_dir.name
    at.run()
    at.switch_page("pages/6_export.py").run()
    assert not at.exception, at.exception
    code = [c.value for c in at.code]
    assert f'pip install "{REPO}"' in code  # on this computer: the checkout it runs from
    assert any('pip install "git+' in c for c in code)  # elsewhere: the package from the repository
    assert sum("from core.results.loading import load_model" in c for c in code) == 2
    assert any("python predict.py" in c and "pip install -r requirements.txt" in c for c in code)
