"""Which files the INPUT arguments name: files as they are, directories as their data
files (recursively, sorted, hidden names skipped at every depth), globs as their matches;
links followed, loops and files reached twice refused."""

from __future__ import annotations

import os
from pathlib import Path

try:
    import fcntl
except ImportError:  # not POSIX: no leases, mapped Arrow IPC is read through a file
    fcntl = None

from ..errors import InvalidInputError
from . import storage

PARQUET_EXT = (".parquet", ".parq", ".pq")
IPC_EXT = (".arrow", ".feather", ".ipc")
INPUT_EXT = PARQUET_EXT + IPC_EXT


def expand_inputs(inputs, extensions=INPUT_EXT, storage_options=None) -> list:
    """Files named by INPUT arguments, in the order given: files as they are, directories
    as their data files (recursively, sorted), globs as their sorted matches. A path that
    exists is always taken literally (a file named ``a[1].parquet`` is that file); only a
    name that does not exist is expanded as a glob. URLs (``s3://...``) are expanded the
    same way, into ``storage.Location``s, by ``storage.expand``.

    Below a named directory every file or folder whose name starts with . or _ is skipped
    (``storage.is_hidden``: ``_SUCCESS``, ``_temporary/``, ``.ipynb_checkpoints/``); in a
    glob, a wildcard never matches such a name (``storage.segment_matches``), a segment
    spelled out is taken as named. Links to files and to folders are followed; a folder
    link that leads back to a folder on its own path (a loop), or one INPUT that reaches
    the same file twice (through links), is refused: its rows would be read twice."""
    files: list = []
    for item in inputs:
        item = storage.local_path(str(item))
        if storage.is_url(item):
            files += storage.expand(item, storage_options, extensions)
        elif os.path.isdir(item):
            found = _walk(item, extensions)
            if not found:
                raise InvalidInputError(f"{item}: directory holds no {'/'.join(extensions)} files")
            files += found
        elif os.path.isfile(item):
            files.append(item)
        elif os.path.exists(item):
            raise InvalidInputError(f"{item}: not a regular file")
        elif storage.has_wildcard(item):
            found = _glob(item)
            if not found:
                raise InvalidInputError(f"{item}: no file matches this pattern")
            files += found
        else:
            raise InvalidInputError(f"{item}: no such file or directory")
    if not files:
        raise InvalidInputError("no input files given")
    return files


def _file_key(path: str):
    """(device, inode) of what ``path`` leads to (links followed), None when there is
    nothing there (a broken link)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _entries(folder: str) -> list:
    try:
        with os.scandir(folder or ".") as it:
            return list(it)
    except PermissionError:
        raise InvalidInputError(f"{folder}: permission denied (cannot list this folder)") from None
    except OSError as exc:
        raise InvalidInputError(f"{folder}: cannot list this folder ({exc.strerror or exc})") from None


def _join(folder: str, name: str) -> str:
    return os.path.join(folder, name) if folder else name


def _is_dir(entry) -> bool:
    try:
        return entry.is_dir()  # links followed
    except OSError:
        return False


def _enter(path: str, ancestors: dict) -> dict | None:
    """``ancestors`` (identity -> path of the folders from the named one down to here) with
    the folder ``path`` added; ``InvalidInputError`` when ``path`` is one of them again (a
    link that loops back); None when it cannot be read."""
    ident = _file_key(path)
    if ident is None:
        return None
    if ident in ancestors:
        raise InvalidInputError(
            f"{path}: a link back to {ancestors[ident]}, a folder that holds it (a loop); "
            "remove the link, or name the folders to read"
        )
    return {**ancestors, ident: path}


class _Found:
    """The files one INPUT reaches, each real file once (by device and inode)."""

    def __init__(self):
        self.paths: list[str] = []
        self._seen: dict = {}

    def add(self, path: str) -> None:
        ident = _file_key(path)
        if ident is not None and ident in self._seen:
            raise InvalidInputError(
                f"{path} and {self._seen[ident]} are the same file (through a link); its rows "
                "would be read twice: remove the link, or name the files to read"
            )
        self._seen[ident] = path
        self.paths.append(path)


def _walk(top: str, extensions) -> list[str]:
    """The data files below the folder ``top``, sorted: hidden names skipped at every depth,
    links followed, loops and files reached twice refused (``expand_inputs``)."""
    top = str(Path(top))  # ``dump/`` and ``./dump`` list as ``dump/...``
    found = _Found()
    stack = [(top, _enter(top, {}))]
    while stack:
        folder, ancestors = stack.pop()
        for entry in _entries(folder):
            if storage.is_hidden(entry.name):
                continue
            if _is_dir(entry):
                below = _enter(entry.path, ancestors)
                if below is not None:
                    stack.append((entry.path, below))
            elif os.path.splitext(entry.name)[1].lower() in extensions:
                _add_file(found, entry.path)
    return sorted(found.paths)


def _add_file(found: _Found, path: str) -> None:
    """A data file's name: the file, or ``InvalidInputError`` for a broken link (a file the
    user put there is never skipped without a word); anything else (a FIFO) is no data."""
    if os.path.isfile(path):
        found.add(path)
    elif os.path.islink(path) and not os.path.exists(path):
        raise InvalidInputError(f"{path}: a broken link (to {os.readlink(path)}); remove it or restore its target")


def _glob(pattern: str) -> list[str]:
    """The files a glob matches, sorted (``*``, ``?``, ``[...]`` within one segment, ``**``
    any number of folders): a wildcard never matches a hidden name
    (``storage.segment_matches``), links are followed, loops and files reached twice are
    refused (``expand_inputs``)."""
    parts = pattern.split(os.sep)
    first = next(i for i, p in enumerate(parts) if storage.has_wildcard(p))
    base = os.sep.join(parts[:first]) or (os.sep if first else "")
    pats = [p for p in parts[first:] if p]
    found = _Found()
    seen: set = set()
    stack = [(base, pats, _enter(base or ".", {}) if os.path.isdir(base or ".") else None)]
    while stack:
        folder, pats, ancestors = stack.pop()
        if ancestors is None or not pats:
            continue
        head, rest = pats[0], pats[1:]
        if head == "**":
            stack.append((folder, rest, ancestors))  # zero folders
            for entry in _entries(folder):
                if not storage.is_hidden(entry.name) and _is_dir(entry):
                    path = _join(folder, entry.name)
                    stack.append((path, pats, _enter(path, ancestors)))
            continue
        names = [e.name for e in _entries(folder)] if storage.has_wildcard(head) else [head]
        for name in names:
            if not storage.segment_matches(name, head):
                continue
            path = _join(folder, name)
            if rest:
                if os.path.isdir(path):
                    stack.append((path, rest, _enter(path, ancestors)))
            elif path not in seen:  # ``**/**`` reaches a path twice
                seen.add(path)
                if os.path.lexists(path) and not os.path.isdir(path):
                    _add_file(found, path)
    return sorted(found.paths)


