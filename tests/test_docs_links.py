"""Every relative link in README.md and docs/*.md points at a file of the repository, and every `#anchor`
at a heading of the page it names (GitHub's heading slugs)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
_FENCE = re.compile(r"^[ \t]*```.*?^[ \t]*```", flags=re.S | re.M)
_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def _prose(text: str) -> str:
    """The text without code blocks and code spans: links and headings are only read from prose."""
    return re.sub(r"`[^`\n]*`", "", _FENCE.sub("", text))


def anchors(page: Path) -> Iterator[str]:
    """GitHub's ids for the headings of `page`: lower case, punctuation dropped, spaces to hyphens,
    `-1`, `-2`, ... for repeats."""
    seen: dict[str, int] = {}
    for heading in re.findall(r"^#{1,6}\s+(.+?)\s*#*$", _FENCE.sub("", page.read_text(encoding="utf-8")), re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.replace("`", "").lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        yield slug if count == 0 else f"{slug}-{count}"


def broken_links(doc: Path) -> list[str]:
    broken = []
    for target in _LINK.findall(_prose(doc.read_text(encoding="utf-8"))):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto: ... are not checked here
            continue
        path, _, anchor = target.partition("#")
        page = (doc.parent / path).resolve() if path else doc
        if not page.exists():
            broken.append(f"{target}: no such file")
        elif anchor and page.suffix == ".md" and anchor not in set(anchors(page)):
            broken.append(f"{target}: no heading #{anchor} in {page.name}")
    return broken


def test_the_docs_have_links_to_check():
    readme_links = _LINK.findall(_prose((REPO / "README.md").read_text(encoding="utf-8")))
    linked = {Path(t.partition("#")[0]).name for t in readme_links}
    assert {p.name for p in DOCS[1:]} <= linked, "every docs/ page is in the README's table"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.relative_to(REPO).as_posix())
def test_relative_links_resolve(doc):
    assert broken_links(doc) == []


def test_a_broken_link_or_anchor_is_reported(tmp_path):
    (tmp_path / "other.md").write_text("# Other page\n\n## Fine-tuning on Arabic (8 GPUs)\n\n## Notes\n\n## Notes\n")
    doc = tmp_path / "doc.md"
    doc.write_text("[ok](other.md#fine-tuning-on-arabic-8-gpus) [ok](other.md#notes-1) [web](https://example.org)\n"
                   "[gone](missing.md) [bad anchor](other.md#nowhere) `[in code](missing2.md)`\n"
                   "```\n[in a block](missing3.md)\n```\n")
    assert broken_links(doc) == ["missing.md: no such file", "other.md#nowhere: no heading #nowhere in other.md"]
