"""Documents the code cites must be in the repository.

Every Markdown file named in a comment or docstring of the Python sources (and in the notes under
``docs/``) must exist, resolved against the repository root or ``docs/`` (Markdown files also
against their own folder), and a cited section ("§2.3", "§1.3-1.4") must be a numbered heading
of that file; a README section cited by its quoted title must be a heading of that README. Stdlib only: no torch or detectron2 import.
"""

import ast
import io
import re
import tokenize
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
SOURCE_DIRS = ("efl_d2", "tools", "tests", "configs", "projects")

_URL = re.compile(r"\w+://\S+")
# A Markdown file name, with an optional folder path, then an optional "§N[.M]" or "§N-M".
_REF = re.compile(
    r"(?<![\w/.-])((?:\.{0,2}/)?(?:[\w.-]+/)*[\w-][\w.-]*\.md)\b"
    r"(?:[\s,`]*§\s*(\d+(?:\.\d+)*)(?:\s*[-–]\s*(\d+(?:\.\d+)*))?)?"
)
_HEADING = re.compile(r"^#{1,6}\s+(\d+(?:\.\d+)*)\.?\s", re.MULTILINE)
# A README cited with the title of one of its sections in quotes, e.g. README, "The two commands".
_README_SECTION = re.compile(
    r"(?<![\w/.-])((?:[\w.-]+/)*README(?:\.md)?)\b[\s,:`]*(?:section\s+)?"
    r"(?:\"([^\"]+)\"|“([^”]+)”|'(?!s\b)([^'\n]+)')"
)
_TITLE = re.compile(r"^#{1,6}\s+(.+)$", re.MULTILINE)


def _python_files():
    for name in SOURCE_DIRS:
        for path in sorted((ROOT / name).rglob("*.py")):
            if "__pycache__" not in path.parts:
                yield path


def comments_and_docstrings(source: str) -> list[tuple[int, str]]:
    """(first line, text) of every comment block and docstring of a Python source."""
    out, last = [], -1
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            text = tok.string.lstrip("#").strip()
            if tok.start[0] == last + 1 and out:  # a comment block is one text
                out[-1] = (out[-1][0], out[-1][1] + " " + text)
            else:
                out.append((tok.start[0], text))
            last = tok.start[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = ast.get_docstring(node, clean=False)
            if doc is not None:
                out.append((node.body[0].lineno, doc))
    return out


def md_references(text: str) -> list[tuple[str, list[str]]]:
    """(cited file, cited section numbers) of every Markdown reference in ``text``."""
    text = _URL.sub(" ", text)
    return [(m[1], [s for s in m.groups()[1:] if s]) for m in _REF.finditer(text)]


def resolve(ref: str, *extra_bases: Path) -> Path | None:
    """The repository file ``ref`` names, or None."""
    if ref.startswith("/"):
        return None  # an absolute path is never part of the repository
    for base in (ROOT, DOCS, *extra_bases):
        path = (base / ref).resolve()
        if path.is_file() and path.is_relative_to(ROOT):
            return path
    return None


def problems_in(text: str, where: str, *extra_bases: Path) -> list[str]:
    problems = []
    for m in _README_SECTION.finditer(_URL.sub(" ", text)):
        ref = m[1] if m[1].endswith(".md") else m[1] + ".md"
        path = resolve(ref, *extra_bases)
        text_md = path.read_text(encoding="utf-8") if path is not None else ""
        title = " ".join(next(t for t in m.groups()[1:] if t).split())
        if title not in {t.strip() for t in _TITLE.findall(text_md)}:
            problems.append(f"{where}: {ref} has no section titled {title!r}")
    for ref, sections in md_references(text):
        path = resolve(ref, *extra_bases)
        if path is None:
            problems.append(f"{where}: {ref!r} is not a file of the repository")
            continue
        headings = set(_HEADING.findall(path.read_text(encoding="utf-8")))
        for section in sections:
            if section not in headings:
                problems.append(f"{where}: {ref} has no numbered section {section}")
    return problems


def test_python_sources_cite_only_existing_documents():
    problems, cited = [], 0
    for path in _python_files():
        rel = path.relative_to(ROOT)
        for line, text in comments_and_docstrings(path.read_text(encoding="utf-8")):
            cited += len(md_references(text))
            problems += problems_in(text, f"{rel}:{line}")
    assert not problems, "dangling document references:\n" + "\n".join(problems)
    assert cited > 5  # the scan does see the code's references


def test_docs_cite_only_existing_documents():
    problems = []
    for path in sorted(DOCS.glob("*.md")):
        text = path.read_text(encoding="utf-8")
        problems += problems_in(text, str(path.relative_to(ROOT)), path.parent)
    assert not problems, "dangling document references:\n" + "\n".join(problems)


@pytest.mark.parametrize(
    "text, bad",
    [
        ("# see docs/official_efl.md §2.3", []),
        ('"""Reference: ``docs/official_checkpoint_format.md`` §1-2."""', []),
        ("# see docs/official_conventions.md", []),
        ("# see official_efl.md §1.2", []),  # resolved in docs/
        ("# see no_such_notes.md §1.4", ["no_such_notes.md"]),
        ("# see docs/official_efl.md §9.9", ["no numbered section 9.9"]),
        ("# see docs/official_efl.md §1.1-7", ["no numbered section 7"]),
        ("# see /elsewhere/official_efl.md", ["/elsewhere/official_efl.md"]),  # absolute
        ("# see https://example.com/README.md", []),  # URLs are not checked
        ('# see projects/README.md, "Related tools"', []),
        ("# see projects/README.md, '`inspect_predictions.ipynb`'", []),
        ('# see README, "Differences from the official implementation"', ["no section titled"]),
        ("# see the README's main command", []),
        ("# projects/README.md, section 'Related\n# tools'", []),
        ('# configs/README.md "OpenImages Challenge 2019 (Table 7)"', []),
        ('# configs/README.md, "Notes"', ["no section titled"]),
    ],
)
def test_the_check_itself(text, bad):
    found = problems_in(" ".join(t for _, t in comments_and_docstrings(text)), "x")
    assert len(found) == len(bad) and all(b in f for b, f in zip(bad, found)), found
