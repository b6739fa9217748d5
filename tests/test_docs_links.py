"""Every relative link in README.md and docs/ leads to a file, and its anchor to a heading."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = sorted([ROOT / "README.md", *(ROOT / "docs").rglob("*.md")])
# [text](target) and [text]: target; images too. Code spans and fenced blocks are removed
# first, so an example link inside code is not checked.
_INLINE = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_REFERENCE = re.compile(r"^\s*\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+\"[^\"]*\")?\s*$", re.MULTILINE)
_FENCE = re.compile(r"^(```|~~~).*?^\1", re.MULTILINE | re.DOTALL)
_CODE_SPAN = re.compile(r"`[^`\n]*`")


def _prose(text: str) -> str:
    return _CODE_SPAN.sub("", _FENCE.sub("", text))


def links(path: Path) -> list[str]:
    """Relative link targets of one Markdown file."""
    text = _prose(path.read_text())
    found = _INLINE.findall(text) + _REFERENCE.findall(text)
    return [t for t in found if not re.match(r"^[a-z][a-z0-9+.-]*:", t, re.IGNORECASE)]


def anchors(path: Path) -> set[str]:
    """GitHub's anchors for the headings of a Markdown file."""
    result: set[str] = set()
    seen: dict[str, int] = {}
    for line in _FENCE.sub("", path.read_text()).splitlines():
        match = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not match:
            continue
        slug = re.sub(r"[^\w\- ]", "", match.group(1).lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        result.add(slug if count == 0 else f"{slug}-{count}")
    return result


def broken_links(path: Path) -> list[str]:
    """Links of one file whose target file or heading does not exist."""
    broken = []
    for target in links(path):
        file_part, _, anchor = target.partition("#")
        dest = (path.parent / file_part).resolve() if file_part else path
        if not dest.exists():
            broken.append(f"{target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor.lower() not in anchors(dest):
            broken.append(f"{target}: no heading #{anchor} in {dest.name}")
    return broken


# A file named in prose ("the contract (DESIGN.md)") is a link a reader follows by hand.
_NAMED_FILE = re.compile(r"(?<![\w/.-])([\w./-]*\w\.md)\b")


def missing_named_files(path: Path) -> list[str]:
    """Markdown files named in the text (outside fenced code) that exist nowhere near.

    A name may be relative to the document's folder or to the repository's root.
    """
    text = _FENCE.sub("", path.read_text())
    text = _INLINE.sub("", text)
    missing = []
    for name in _NAMED_FILE.findall(text):
        if not any((base / name).exists() for base in (path.parent, ROOT)):
            missing.append(f"{name}: named but not in the repository")
    return missing


@pytest.mark.parametrize("path", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(path: Path) -> None:
    assert broken_links(path) == []


@pytest.mark.parametrize("path", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_files_named_in_the_text_exist(path: Path) -> None:
    assert missing_named_files(path) == []


def test_the_checker_sees_a_file_named_that_does_not_exist(tmp_path: Path) -> None:
    (tmp_path / "there.md").write_text("# A heading\n")
    page = tmp_path / "page.md"
    page.write_text("The contract (DESIGN.md), there.md and `there.md` are named.\n")
    assert missing_named_files(page) == ["DESIGN.md: named but not in the repository"]


def test_the_checker_sees_a_broken_link(tmp_path: Path) -> None:
    (tmp_path / "there.md").write_text("# A heading\n")
    page = tmp_path / "page.md"
    page.write_text(
        "See [design](../DESIGN.md), [ok](there.md#a-heading), [bad anchor](there.md#nope),\n"
        "[web](https://example.org/x.md) and `[code](nowhere.md)`.\n"
    )
    assert broken_links(page) == [
        "../DESIGN.md: no such file",
        "there.md#nope: no heading #nope in there.md",
    ]
