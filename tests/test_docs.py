"""The docs site (issue 34) builds from the repository with warnings as errors: `mkdocs build
--strict` over mkdocs.yml, docs/ and the docstrings (mkdocstrings), as `make docs` runs it."""

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

pytest.importorskip("mkdocs", reason="the docs extra is not installed (pip install -e '.[docs]')")
pytest.importorskip("mkdocstrings", reason="the docs extra is not installed (pip install -e '.[docs]')")


def test_docs_build_strict(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(REPO / "mkdocs.yml"),
         "--site-dir", str(tmp_path / "site")],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log
    assert "WARNING" not in log, log
    assert (tmp_path / "site" / "index.html").is_file()
    # The API reference was generated from the docstrings, not left as a "::: module" line.
    site = tmp_path / "site"
    api = (site / "api" / "api" / "index.html").read_text(encoding="utf-8")
    assert "dgmkit.api.train" in api and ":::" not in api
    # Every page was built with its snippets (transcripts, examples) included, not left as a line.
    for page in (REPO / "docs").rglob("*.md"):
        rel = page.relative_to(REPO / "docs").with_suffix("")
        html = site / (f"{rel}.html" if rel.name == "index" else f"{rel}/index.html")
        text = html.read_text(encoding="utf-8")
        assert "--8&lt;--" not in text and "--8<--" not in text, f"{rel}: a snippet was not included"
    # The family pages carry their objective as math.
    for page in (REPO / "docs" / "families").glob("*.md"):
        if page.stem != "index":
            html = (site / "families" / page.stem / "index.html").read_text(encoding="utf-8")
            assert 'class="arithmatex"' in html, f"{page.name}: no equation"
