"""The documentation's references resolve: every citation of a page and heading in the
code and the docs (the README or a docs/ page, then a comma and the heading in double
quotes) names a page that exists and a heading it has; every relative link of the
README and docs/*.md reaches a file and, with an #anchor, a heading of it; the README
stays a user's page. Fast, no torch."""

from __future__ import annotations

import re
import unicodedata
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SUFFIXES = {".py", ".proto", ".sh", ".js", ".yaml", ".md"}
SKIP_DIRS = {".venv", "node_modules", ".git", "__pycache__", "build", "dist"}
README_MAX_LINES = 300
README_FIRST_LINE = "# Neural style transfer for GIMP"

# A page (README, README.md or docs/NAME.md), a comma, then the heading in double quotes;
# with or without parentheses around it. Spelled in pieces so this file cites nothing.
CITATION = re.compile(r"\b(README(?:\.md)?|docs/[\w./-]+?\.md)" + r",\s*" + '"([^"\n]+)"')
HEADING = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.*?)(?:[ \t]+#+)?[ \t]*$")
FENCE = re.compile(r"^ {0,3}(```|~~~)")
LINK = re.compile(r"!?\[[^\]\n]*\]\(\s*<?([^)\s>]*)>?(?:\s+\"[^\"]*\")?\s*\)")
CODE_SPAN = re.compile(r"(`+)(?:(?!\1).)+?\1")


def _source_files() -> list[Path]:
    files = []
    for path in sorted(ROOT.rglob("*")):
        rel = path.relative_to(ROOT)
        if any(part in SKIP_DIRS or part.endswith(".egg-info") for part in rel.parts[:-1]):
            continue
        if path.is_file() and path.suffix in SUFFIXES:
            files.append(path)
    return files


def _markdown_lines(path: Path) -> list[tuple[int, str]]:
    """(line number, text) of the lines outside fenced code blocks."""
    out, fenced = [], None
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        match = FENCE.match(line)
        if match:
            if fenced is None:
                fenced = match.group(1)
            elif match.group(1) == fenced:
                fenced = None
            continue
        if fenced is None:
            out.append((number, line))
    return out


@cache
def headings(path: Path) -> tuple[str, ...]:
    """A markdown file's headings as written (without the #s)."""
    return tuple(m.group(2).strip() for _, line in _markdown_lines(path) if (m := HEADING.match(line)))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lowercase, markup and punctuation dropped except
    '-' and '_', each space a '-'."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link: its text
    text = unicodedata.normalize("NFC", text).lower()
    text = "".join(c for c in text if c in " -_" or unicodedata.category(c)[0] in "LNM")
    return text.replace(" ", "-")


@cache
def anchors(path: Path) -> frozenset[str]:
    """Every anchor GitHub makes for a file's headings (a repeated one gets -1, -2, ...)."""
    seen: dict[str, int] = {}
    out = set()
    for heading in headings(path):
        base = slug(heading)
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")
    return frozenset(out)


def _rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def _citations() -> list:
    cases = []
    for path in _source_files():
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        for match in CITATION.finditer(text):
            line = text.count("\n", 0, match.start()) + 1
            where = f"{_rel(path)}:{line}"
            cases.append(pytest.param(where, match.group(1), match.group(2), id=where))
    return cases


def _doc_pages() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _links() -> list:
    cases = []
    for page in _doc_pages():
        for number, line in _markdown_lines(page):
            for match in LINK.finditer(CODE_SPAN.sub("code", line)):
                target = match.group(1)
                if not target or re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):  # http(s), mailto, ...
                    continue
                where = f"{_rel(page)}:{number}"
                cases.append(pytest.param(where, target, id=f"{where}:{target}"))
    return cases


@pytest.mark.parametrize("where, page, heading", _citations())
def test_citation_resolves(where: str, page: str, heading: str) -> None:
    file = ROOT / ("README.md" if page.startswith("README") else page)
    assert file.is_file(), f"{where}: cites {page}, which does not exist"
    assert heading in headings(file), (
        f'{where}: {page} has no heading "{heading}"; its headings: {list(headings(file))}')


@pytest.mark.parametrize("where, target", _links())
def test_link_resolves(where: str, target: str) -> None:
    page = ROOT / where.rsplit(":", 1)[0]
    path, _, anchor = target.partition("#")
    file = (page.parent / path).resolve() if path else page
    assert file.exists(), f"{where}: links to {path}, which does not exist"
    assert ROOT in file.parents or file == ROOT, f"{where}: links outside the repository: {path}"
    if anchor:
        assert file.suffix == ".md", f"{where}: an anchor into a file that is not markdown: {target}"
        assert anchor in anchors(file), (
            f"{where}: {_rel(file)} has no heading whose anchor is #{anchor}; its anchors: {sorted(anchors(file))}")


def test_readme_is_a_users_page() -> None:
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert lines[0] == README_FIRST_LINE
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines; at most {README_MAX_LINES}"


def test_the_checks_see_something() -> None:
    """A pattern that silently matched nothing would pass every check above."""
    assert _links(), "no relative links found in README.md and docs/"
    assert slug("Deployment on Kubernetes (KubeRay)") == "deployment-on-kubernetes-kuberay"
    assert slug("AMD EPYC Zen 5, avx512_bf16, no AMX") == "amd-epyc-zen-5-avx512_bf16-no-amx"
    comma = ', "'  # apart, so that this file cites nothing itself
    assert CITATION.search('(docs/a.md' + comma + 'B")') and CITATION.search("see README" + comma + 'C" there')
