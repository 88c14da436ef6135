"""The documentation builds, its links hold, and its examples say what the code does.

- ``mkdocs build --strict`` (every page of mkdocs.yml, every link and anchor between pages,
  the API reference generated from the docstrings) must finish without a warning.
- Every relative link in README.md must point at a file of the repository.
- Every fenced block marked ``console`` in README.md and docs/ is run. In it, a line that
  starts with ``$ `` is a shell command, and the lines up to the next ``$ `` line (or the
  end of the block) are its expected standard output; a line that is exactly ``...``
  stands for any number of lines. The commands of one file run in order, in one fresh
  temporary directory holding a copy of data/, with ``xent`` and ``python`` standing for
  ``python -m xent_numba`` and the interpreter of this checkout. Each command must exit 0
  (show a failing one as ``cmd 2>&1; echo "exit code $?"``). Blocks marked ``text``,
  ``bash`` or anything else are shown, not run: use them for output that varies (timings,
  tables drawn for a terminal) or commands that need more than this machine has.
- Every ``>>>`` example in a ``python`` block of those files runs as a doctest (the blocks
  of one file share their names, in order).
"""

from __future__ import annotations

import doctest
import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOC_FILES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
FENCE = re.compile(r"^(?P<indent>[ ]*)(?P<fence>`{3,})(?P<lang>[\w-]*)[ ]*$")

# ``xent`` and ``python`` in a documented command, as this checkout runs them
PRELUDE = 'xent() { "$XENT_DOCS_PYTHON" -m xent_numba "$@"; }\npython() { "$XENT_DOCS_PYTHON" "$@"; }\n'


def _rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


def fenced_blocks(path: Path) -> list[tuple[str, int, list[str]]]:
    """``(language, line number of the first body line, body lines)`` of every fenced block."""
    blocks, lines, i = [], path.read_text(encoding="utf-8").splitlines(), 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, fence, start, body = len(m["indent"]), m["fence"], i + 2, []
        i += 1
        while i < len(lines) and lines[i].strip() != fence:
            body.append(lines[i][indent:] if lines[i][:indent].strip() == "" else lines[i])
            i += 1
        blocks.append((m["lang"], start, body))
        i += 1
    return blocks


def console_examples(path: Path) -> list[tuple[int, str, list[str]]]:
    """``(line number, command, expected output lines)`` of the file's console blocks."""
    examples = []
    for lang, start, body in fenced_blocks(path):
        if lang != "console":
            continue
        for n, line in enumerate(body):
            if line.startswith("$ "):
                examples.append((start + n, line[2:], []))
            elif not examples or examples[-1][0] < start:
                raise AssertionError(f"{_rel(path)}:{start + n}: console output before any '$ ' command")
            else:
                examples[-1][2].append(line)
    return examples


def _matches(expected: list[str], actual: list[str]) -> bool:
    pattern = "".join(r"(?:.*\n)*?" if line == "..." else re.escape(line) + r"\n" for line in expected)
    return re.fullmatch(pattern, "".join(line + "\n" for line in actual)) is not None


def _normalised(text: str) -> list[str]:
    lines = [line.rstrip() for line in text.splitlines()]
    while lines and not lines[-1]:
        lines.pop()
    return lines


FILES_WITH_CONSOLE = [p for p in DOC_FILES if console_examples(p)]
FILES_WITH_DOCTESTS = [p for p in DOC_FILES if any(lang == "python" and any(
    line.lstrip().startswith(">>>") for line in body) for lang, _, body in fenced_blocks(p))]


def test_docs_build_strict(tmp_path):
    """The site builds with no warning: pages, nav, links, anchors and the API reference."""
    if importlib.util.find_spec("mkdocs") is None:
        pytest.fail("mkdocs is not installed: the docs build with the test extra, pip install '.[test]'")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(tmp_path / "site")],
        cwd=ROOT, capture_output=True, text=True, env=env, timeout=300,
    )
    assert proc.returncode == 0, f"mkdocs build --strict failed:\n{proc.stdout}\n{proc.stderr}"
    assert (tmp_path / "site" / "api-reference" / "index.html").exists()


def test_readme_links_point_at_files():
    """Every relative link of README.md (GitHub renders them) names a file that exists."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    links = re.findall(r"\[[^\]]*\]\(([^)\s]+)\)", text)
    relative = [u for u in links if not re.match(r"^[a-z][a-z0-9+.-]*:|^#", u)]
    assert relative, "README.md links to no docs page"
    missing = [u for u in relative if not (ROOT / u.split("#")[0]).exists()]
    assert not missing, f"README.md links to missing files: {missing}"


def test_console_blocks_are_parsed():
    """The examples the other tests run are found (a typo in a fence would skip them all)."""
    assert ROOT / "README.md" in FILES_WITH_CONSOLE
    assert ROOT / "README.md" in FILES_WITH_DOCTESTS
    assert sum(len(console_examples(p)) for p in FILES_WITH_CONSOLE) >= 10


@pytest.mark.parametrize("path", FILES_WITH_CONSOLE, ids=_rel)
def test_console_examples(path, tmp_path):
    """Each ``$`` command of the file's console blocks prints exactly the output shown."""
    shutil.copytree(ROOT / "data", tmp_path / "data")
    env = {
        **os.environ,
        "XENT_DOCS_PYTHON": sys.executable,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
        "NO_COLOR": "1",
        "TERM": "dumb",
    }
    env.pop("NUMBA_ENABLE_CUDASIM", None)  # as a user's shell has it
    for line, command, expected in console_examples(path):
        proc = subprocess.run(
            ["bash", "-c", PRELUDE + command], cwd=tmp_path, env=env,
            capture_output=True, text=True, timeout=300,
        )
        where = f"{_rel(path)}:{line}: $ {command}"
        assert proc.returncode == 0, f"{where}\nexit code {proc.returncode}\n{proc.stderr}"
        actual = _normalised(proc.stdout)
        want = _normalised("\n".join(expected))
        assert _matches(want, actual), (
            f"{where}\n--- shown in the docs\n" + "\n".join(want) + "\n--- printed\n" + "\n".join(actual)
        )


@pytest.mark.parametrize("path", FILES_WITH_DOCTESTS, ids=_rel)
def test_python_examples(path):
    """The ``>>>`` examples of the file's python blocks, run as doctests."""
    parser = doctest.DocTestParser()
    examples = []
    for lang, start, body in fenced_blocks(path):
        if lang == "python" and any(line.lstrip().startswith(">>>") for line in body):
            for ex in parser.get_examples("\n".join(body) + "\n"):
                ex.lineno += start - 1
                examples.append(ex)
    test = doctest.DocTest(examples, {}, _rel(path), str(path), 0, None)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    out: list[str] = []
    result = runner.run(test, out=out.append)
    assert result.attempted and result.failed == 0, "".join(out)
