"""Every Markdown file the tree cites exists in the repository: a docstring, config comment,
requirements line or doc that points a reader at a page must point at a page they can open."""

import os
import re

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCANNED = (".py", ".md", ".yaml", ".txt", ".cfg")
SKIPPED_DIRS = {"output", "build", "dist", "__pycache__"}  # run outputs and build products
# file names that a test or a tool writes (tmp_path / NAME, an output folder / NAME), which no
# reader is pointed at: the report tools/mechanisms.py writes into its output folder
WRITTEN = {"mechanisms.md"}
MD_NAME = re.compile(r"[\w./-]*\w\.md\b")


def _scanned_files():
    """The repository's source, config and doc files (not datasets' contents or run outputs)."""
    for folder, dirs, files in os.walk(REPO):
        dirs[:] = [d for d in dirs if not d.startswith(".") and d not in SKIPPED_DIRS
                   and not d.endswith(".egg-info")
                   and os.path.relpath(folder, REPO) != "datasets"]  # the data trees
        for name in files:
            if name.endswith(SCANNED):
                yield os.path.join(folder, name)


def _citations():
    """(citing file, cited name) for every `*.md` name in a scanned file."""
    for path in _scanned_files():
        with open(path, encoding="utf-8") as f:
            for name in MD_NAME.findall(f.read()):
                if name not in WRITTEN:
                    yield os.path.relpath(path, REPO), name


def _resolves(citing: str, name: str) -> bool:
    """A name resolves from the citing file's folder (Markdown links) or the repository root
    (paths in code and configs)."""
    here = os.path.dirname(os.path.join(REPO, citing))
    return any(os.path.isfile(os.path.normpath(os.path.join(base, name))) for base in (here, REPO))


def test_every_cited_markdown_file_exists():
    citations = list(_citations())
    assert len({name for _, name in citations}) >= 5  # the scan sees the docs it should
    missing = sorted({f"{citing}: {name}" for citing, name in citations
                      if not _resolves(citing, name)})
    assert not missing, "cited but not in the repository:\n" + "\n".join(missing)


def test_the_pages_the_code_relies_on_are_there():
    for page in ("docs/architecture.md", "docs/datasets-and-evaluation.md", "docs/teacher.md",
                 "datasets/README.md"):
        assert os.path.isfile(os.path.join(REPO, page)), page
