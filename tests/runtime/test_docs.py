"""The README stays a short entry point, and what the docs quote from the code is the code's.

`mkdocs build --strict` (in .ci/run) checks the site's own links and anchors; these tests check what it
cannot see: the README, which is not part of the site, and figures generated from the code.
"""

import re
from pathlib import Path

import pytest

from clip_onnx.thresholds import GATE_IMAGES, markdown_table

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
README = ROOT / "README.md"
MAX_README_LINES = 250
# CI and new users depend on these two lines, character for character.
SETUP_LINES = ("bash scripts/dev-setup.sh && .venv/bin/clip-onnx demo", "bash scripts/test.sh")
LINK = re.compile(r"\]\(([^)\s]+)\)")


def _text(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def test_readme_is_at_most_250_lines():
    lines = len(_text(README).splitlines())
    assert lines <= MAX_README_LINES, (
        f"README.md has {lines} lines, more than {MAX_README_LINES}: move the detail into a page under docs/"
    )


def test_readme_keeps_the_two_setup_commands():
    commands = [line.split("#")[0].strip() for line in _text(README).splitlines()]
    for line in SETUP_LINES:
        assert line in commands, f"README.md lost the set-up line {line!r}"


@pytest.mark.parametrize("document", ["README.md", "CHANGELOG.md"])
def test_relative_links_outside_the_site_point_at_files_that_exist(document):
    path = ROOT / document
    targets = [t for t in LINK.findall(_text(path)) if "://" not in t and not t.startswith("#")]
    assert targets or document != "README.md", "the README links to no page"
    missing = [t for t in targets if not (path.parent / t.split("#")[0]).exists()]
    assert not missing, f"{document} links to missing files: {missing}"


def test_every_page_is_in_the_site_navigation():
    nav = set(re.findall(r":\s*(\S+\.md)\s*$", _text(ROOT / "mkdocs.yml"), flags=re.MULTILINE))
    pages = {p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md")}
    assert pages == nav, f"not in mkdocs.yml's nav: {sorted(pages - nav)}; in the nav, no page: {sorted(nav - pages)}"


def test_the_gate_table_on_the_precision_page_is_the_thresholds_table():
    page = _text(DOCS / "precision.md")
    assert markdown_table() in page, "docs/precision.md's gate table differs from clip_onnx.thresholds; paste it again"
    assert f"compares it with fp32 on {GATE_IMAGES} pictures" in " ".join(page.split())
