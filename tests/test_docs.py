"""The README and docs/: every relative link and anchor resolves, and the
README's front page stays short. No broker needed."""

import re
import unicodedata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FRONT_PAGE_LINES = 200

FENCE = re.compile(r"^ {0,3}(```|~~~)")
HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
CODE_SPAN = re.compile(r"(`+).*?\1")
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]*)>?(?:\s+\"[^\"]*\")?\s*\)")


def prose_lines(text):
    """The lines outside fenced code blocks and indented code (lines of 4
    spaces after a blank line), as (line number, line)."""
    fenced = False
    previous_blank = True
    in_indented = False
    for number, line in enumerate(text.splitlines(), 1):
        if FENCE.match(line):
            fenced = not fenced
            continue
        if fenced:
            continue
        blank = not line.strip()
        if line.startswith("    ") and (previous_blank or in_indented) and not blank:
            in_indented = True
            previous_blank = False
            continue
        if not blank:
            in_indented = False
        previous_blank = blank
        yield number, line


def anchor(heading):
    """GitHub's anchor for a heading: the text without markup, lowercased,
    punctuation dropped (letters, digits, '_', '-' and spaces stay), each
    space a '-'."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link: its text
    text = text.replace("`", "").replace("*", "")
    text = text.lower()
    kept = "".join(c for c in text
                   if c in " -_" or unicodedata.category(c)[0] in "LN")
    return kept.replace(" ", "-")


def anchors(text):
    """Every anchor a page has; repeated headings get -1, -2, ... as on GitHub."""
    seen = {}
    found = set()
    for _, line in prose_lines(text):
        match = HEADING.match(line)
        if match:
            base = anchor(match.group(2))
            count = seen.get(base, 0)
            seen[base] = count + 1
            found.add(base if count == 0 else "%s-%d" % (base, count))
    return found


def links(text):
    """(line number, target) of every link outside code."""
    for number, line in prose_lines(text):
        for match in LINK.finditer(CODE_SPAN.sub("", line)):
            yield number, match.group(1)


def broken_links(page):
    """One line per link of the page (a Path) that does not resolve."""
    text = page.read_text(encoding="utf-8")
    problems = []
    for number, target in links(text):
        if re.match(r"[a-z][a-z0-9+.-]*:", target, re.I):  # http:, mailto:, ...
            continue
        path, _, fragment = target.partition("#")
        where = "%s:%d: %s" % (page.name, number, target)
        if not path and not fragment:
            problems.append(where + ": empty link")
            continue
        linked = (page.parent / path).resolve() if path else page
        if not linked.exists():
            problems.append(where + ": no such file")
            continue
        if fragment:
            if linked.suffix != ".md" or linked.is_dir():
                problems.append(where + ": an anchor into a file that is not Markdown")
            elif fragment not in anchors(linked.read_text(encoding="utf-8")):
                problems.append(where + ": no such anchor")
    return problems


@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(ROOT)))
def test_relative_links_and_anchors_resolve(page):
    assert broken_links(page) == []


def test_docs_pages_exist_and_are_linked_from_the_readme():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    linked = {(ROOT / target.partition("#")[0]).resolve() for _, target in links(readme)}
    pages = sorted((ROOT / "docs").glob("*.md"))
    assert pages, "docs/ has no pages"
    assert [page.name for page in pages if page.resolve() not in linked] == []


def test_readme_front_page_is_short():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) < FRONT_PAGE_LINES


@pytest.mark.not_ours
def test_the_checker_finds_broken_links_and_anchors(tmp_path):
    """The checker itself: a page with good and bad links of every kind."""
    (tmp_path / "other.md").write_text("# Other page\n\n## TLS (amqps://)\n\n## Same\n\n## Same\n")
    page = tmp_path / "page.md"
    page.write_text(
        "# Title\n\n"
        "## Clusters (several `--url`)\n\n"
        "[ok](other.md) [ok](other.md#tls-amqps) [ok](#clusters-several---url) [ok](other.md#same-1)\n"
        "[ok](https://example.com/#nothing) `[not a link](missing.md)`\n"
        "[bad](missing.md)\n"
        "[bad](other.md#tls)\n"
        "[bad](#clusters)\n"
        "```\n[not a link](missing.md)\n```\n")
    assert broken_links(page) == [
        "page.md:7: missing.md: no such file",
        "page.md:8: other.md#tls: no such anchor",
        "page.md:9: #clusters: no such anchor",
    ]


@pytest.mark.not_ours
@pytest.mark.parametrize("heading, expected", [
    ("Clusters (several `--url`)", "clusters-several---url"),
    ("TLS (amqps://)", "tls-amqps"),
    ("What changed since 2009, and why", "what-changed-since-2009-and-why"),
    ("The two-terminal walkthrough", "the-two-terminal-walkthrough"),
    ("Options in brief", "options-in-brief"),
])
def test_anchor_follows_githubs_rule(heading, expected):
    assert anchor(heading) == expected
