"""The embedded text corpus: docstrings and comments of the installed Python standard library.

Every machine that runs autoprune has this text, so the embedded model can be trained,
calibrated and evaluated without a network and without committing any prose. The text is
harvested at run time and split by file, deterministically, into disjoint train /
calibration / evaluation parts, so the held-out parts never leak into training.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import io
import os
import sysconfig
import tokenize
from collections.abc import Iterator
from pathlib import Path

SPLITS = ("train", "calib", "eval")
_SKIPPED_DIRS = {"site-packages", "dist-packages", "test", "tests", "idle_test", "__pycache__"}


def stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def split_of(relative_path: str) -> str:
    """Assign a file to a split by a hash of its path: 90 % train, 5 % calib, 5 % eval."""
    bucket = hashlib.sha256(relative_path.encode()).digest()[0] % 20
    return "eval" if bucket == 0 else "calib" if bucket == 1 else "train"


def source_files(split: str, root: Path | None = None) -> list[Path]:
    """The standard-library files of one split, in a stable order."""
    if split not in SPLITS:
        raise ValueError(f"unknown corpus split {split!r}; choose one of {', '.join(SPLITS)}")
    root = root or stdlib_root()
    files = []
    for folder, subfolders, names in os.walk(root):
        subfolders[:] = [name for name in subfolders if name not in _SKIPPED_DIRS]  # not walked at all
        for name in names:
            path = Path(folder, name)
            if name.endswith(".py") and split_of(path.relative_to(root).as_posix()) == split:
                files.append(path)
    return sorted(files)


def paragraphs(source: str) -> Iterator[str]:
    """Docstrings, then runs of consecutive comment lines, of one module's source."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = ast.get_docstring(node, clean=True)
            if doc and doc.strip():
                yield doc.strip()
    run: list[str] = []
    last_line = -2
    try:
        for tok in tokenize.generate_tokens(io.StringIO(source).readline):
            if tok.type != tokenize.COMMENT:
                continue
            text = tok.string.lstrip("#").strip()
            line = tok.start[0]
            if line != last_line + 1 and run:
                yield " ".join(run)
                run = []
            if text and not text.startswith("!") and "coding" not in text[:20]:
                run.append(text)
            last_line = line
    except (tokenize.TokenError, IndentationError, SyntaxError):
        pass
    if run:
        yield " ".join(run)


@functools.lru_cache(maxsize=8)
def corpus_text(split: str, max_chars: int | None = None, root: Path | None = None) -> str:
    """The text of one split, paragraphs joined by blank lines; stops early past max_chars. Kept
    for the process: harvesting it parses hundreds of files (a second a split), and every study
    and export in one process reads the same splits."""
    parts: list[str] = []
    size = 0
    for path in source_files(split, root):
        for paragraph in paragraphs(path.read_text(encoding="utf-8", errors="replace")):
            parts.append(paragraph)
            size += len(paragraph) + 2
        if max_chars is not None and size >= max_chars:
            break
    text = "\n\n".join(parts)
    return text if max_chars is None else text[:max_chars]
