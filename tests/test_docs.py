"""README.md and docs/*.md: every relative link and image points at a file that exists, every #anchor at a heading.

Pure stdlib, no network: http(s) and mailto links are not followed, links inside fenced code blocks are ignored.
Anchors follow GitHub's heading slugs (lowercase, punctuation other than hyphens and spaces dropped, spaces to
hyphens, repeated headings numbered -1, -2, ...).
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = sorted([README, *(ROOT / "docs").glob("*.md")])
MAX_README_LINES = 300

FENCE = re.compile(r"^\s*(```|~~~)")
INLINE_CODE = re.compile(r"(`+).*?\1")
# [text](target) and ![alt](target); an optional "title" after the target is allowed.
MD_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HTML_REF = re.compile(r"<(?:img|a)\b[^>]*?\b(?:src|href)=\"([^\"]+)\"", re.IGNORECASE)
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
EXTERNAL = ("http://", "https://", "mailto:", "ftp://")


def prose_lines(text: str) -> list[str]:
    """The file's lines outside fenced code blocks."""
    lines, fenced = [], False
    for line in text.splitlines():
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            lines.append(line)
    return lines


def slug(heading: str) -> str:
    """GitHub's anchor for a heading text (markup such as backticks and link syntax reduced to its text)."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # [text](url) -> text
    text = re.sub(r"<[^>]+>", "", text).strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)  # keeps letters, digits, underscores, hyphens and spaces
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every heading anchor of a Markdown file, with GitHub's -1, -2 suffixes for repeated headings."""
    seen: dict[str, int] = {}
    found = set()
    for line in prose_lines(path.read_text(encoding="utf-8")):
        match = HEADING.match(line)
        if not match:
            continue
        base = slug(match.group(2))
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def links(path: Path) -> list[str]:
    """Relative link and image targets of a Markdown file (Markdown and HTML syntax), outside code."""
    targets = []
    for line in prose_lines(path.read_text(encoding="utf-8")):
        line = INLINE_CODE.sub("", line)
        targets += MD_LINK.findall(line) + HTML_REF.findall(line)
    return [t for t in targets if not t.lower().startswith(EXTERNAL)]


def test_slug_follows_github_rules() -> None:
    assert slug("Real nights from the model catalogue (`models.yaml`)") == "real-nights-from-the-model-catalogue-modelsyaml"
    assert slug("The nightly loop, the gate, promotion and rollback") == "the-nightly-loop-the-gate-promotion-and-rollback"
    assert slug("State and Prefect's home") == "state-and-prefects-home"
    assert slug("Hot swaps (/reload)") == "hot-swaps-reload"
    assert slug("NIGHTSHIFT_ settings") == "nightshift_-settings"


def test_link_extraction_skips_code_and_external_links(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("[a](a.md) ![b](b.png) [c](https://example.com) `[d](d.md)`\n```\n[e](e.md)\n```\n"
                    '<img src="f.png" alt="f"> [g](#h)\n', encoding="utf-8")
    assert links(page) == ["a.md", "b.png", "#h", "f.png"]


@pytest.mark.parametrize("path", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_and_anchors_resolve(path: Path) -> None:
    broken = []
    for target in links(path):
        file_part, _, anchor = target.partition("#")
        dest = (path.parent / unquote(file_part)).resolve() if file_part else path
        if not dest.exists():
            broken.append(f"{target}: no file {dest.relative_to(ROOT) if dest.is_relative_to(ROOT) else dest}")
            continue
        if anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{target}: no heading #{anchor} in {dest.relative_to(ROOT)}")
    assert not broken, f"{path.relative_to(ROOT)}:\n" + "\n".join(broken)


def test_every_guide_is_linked_from_the_readme() -> None:
    linked = {(README.parent / t.partition("#")[0]).resolve() for t in links(README) if t.partition("#")[0]}
    guides = {p.resolve() for p in DOCS if p != README}
    assert not guides - linked, f"guides the README does not link: {sorted(p.name for p in guides - linked)}"


def test_every_guide_starts_with_a_title_and_links_back() -> None:
    for path in DOCS:
        if path == README:
            continue
        text = path.read_text(encoding="utf-8")
        assert text.startswith("# "), f"{path.name} does not start with a '# Title'"
        assert "../README.md" in links(path), f"{path.name} does not link back to the README"


def test_readme_is_a_front_page() -> None:
    text = README.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= MAX_README_LINES, f"README.md has {len(text.splitlines())} lines"
    assert "make demo" in text and "make test" in text
