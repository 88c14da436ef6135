"""Files in and out: input discovery, batch readers (Parquet, memory-mapped Arrow IPC /
Feather) and atomic writers (Parquet, CSV, JSON lines, Arrow IPC / Feather)."""

from __future__ import annotations

import ctypes
import errno
import json
import math
import mmap
import os
import re
import signal
import stat
import sys
import threading
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

try:
    import fcntl
except ImportError:  # not POSIX: no leases, mapped Arrow IPC is read through a file
    fcntl = None

from . import rowgroups, storage
from .errors import InvalidInputError

PARQUET_EXT = (".parquet", ".parq", ".pq")
IPC_EXT = (".arrow", ".feather", ".ipc")
INPUT_EXT = PARQUET_EXT + IPC_EXT
FORMATS = {
    ".parquet": "parquet",
    ".parq": "parquet",
    ".pq": "parquet",
    ".csv": "csv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".arrow": "arrow",
    ".feather": "arrow",
    ".ipc": "arrow",
}
FORMAT_CHOICES = ("parquet", "csv", "jsonl", "arrow")


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


# Parquet is read through a buffered stream of this many bytes, not memory-mapped: the
# reader then holds a few buffers at a time, where a memory map would leave every page of
# the file it touched counted in the process's resident memory (the whole file, at the end).
PARQUET_BUFFER_BYTES = 8 << 20
# Memory-mapped Arrow IPC input: pages this far behind the batch being read are unmapped
# (beyond the engine's read-ahead of 96 MB, so in practice no page is still in use)
RELEASE_BEHIND = 128 << 20
# decoded input that the threads decoding later row groups may hold (``Source.batches``)
DECODE_AHEAD = 32 << 20


# Memory-mapped inputs alive at once (each holds two file descriptors and a lease until the
# last batch that views it is gone); further Arrow IPC files are read through a file.
MAX_MAPPED = 32
CHANGED = "changed while it was being read (rewritten, truncated or replaced); score it again once it is complete"


def _lease_ready() -> bool:
    """Read leases may be taken: Linux, and SIGIO ignored. A lease break is announced with
    SIGIO, whose default action ends the process; the reader asks the lease itself before
    each batch (``_Mapped.broken``), so the signal is ignored rather than handled: then it
    interrupts no system call and cannot land on a default action while the interpreter
    exits. Called from the main thread, this ignores SIGIO where it has its default action
    (for the rest of the process, and the programs it starts); anywhere else (another
    thread, a caller's own SIGIO handler) no lease is taken."""
    if fcntl is None or not hasattr(fcntl, "F_SETLEASE") or not hasattr(signal, "SIGIO"):
        return False
    handler = signal.getsignal(signal.SIGIO)
    if handler == signal.SIG_IGN:
        return True
    if handler == signal.SIG_DFL and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGIO, signal.SIG_IGN)
        return True
    return False


class _Mapped:
    """A local file memory-mapped read-only under a Linux read lease (``F_SETLEASE
    F_RDLCK``). While the lease is held, another process that opens the file for writing or
    truncates it waits in the kernel (up to ``/proc/sys/fs/lease-break-time`` seconds) and
    the lease is marked as breaking: the mapped pages cannot vanish under a reader (which
    would be SIGBUS, the end of the process with no word and the temporary output left
    behind); ``broken`` says when that happens.

    ``buffer()`` is the map as an Arrow buffer whose every slice keeps this object alive;
    the lease lives as long as the open file that the map and ``fd`` share. So the map is
    unmapped, and the lease released (the other process goes on), only when the last batch
    that views it is gone: after every stage (reader, kernels, writer) stopped touching it."""

    live = 0  # maps alive in this process
    _lock = threading.Lock()

    @classmethod
    def open(cls, path: str):
        """The map, or None where it cannot be leased: not Linux, SIGIO not ours to ignore,
        the file open for writing elsewhere (EAGAIN), a filesystem without leases, a file
        of another owner, an empty file (which cannot be mapped), or ``MAX_MAPPED`` maps
        alive."""
        if cls.live >= MAX_MAPPED or not _lease_ready():
            return None
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        try:
            fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_RDLCK)
            if os.fstat(fd).st_size == 0:
                raise OSError(errno.EINVAL, "empty")
            mm = mmap.mmap(fd, 0, access=mmap.ACCESS_READ)
        except OSError:
            os.close(fd)  # the lease, if taken, goes with the last descriptor of the file
            return None
        return cls(fd, mm)

    def __init__(self, fd: int, mm: mmap.mmap):
        self.fd = fd
        self.mm = mm
        self._view = pa.py_buffer(mm)
        self.span = (self._view.address, self._view.address + self._view.size)
        with _Mapped._lock:
            _Mapped.live += 1

    def buffer(self) -> pa.Buffer:
        lo, hi = self.span
        return pa.foreign_buffer(lo, hi - lo, base=self)

    def broken(self) -> bool:
        """The lease is being broken (or was, after the break time): the file is about to
        change."""
        try:
            return fcntl.fcntl(self.fd, fcntl.F_GETLEASE) != fcntl.F_RDLCK
        except OSError:
            return True

    def __del__(self, _close=os.close):  # ``os`` may be gone at interpreter exit
        self._view = None
        try:
            self.mm.close()  # munmap; were a view still exported, the map (and lease) would live on with it
        except Exception:
            pass
        try:
            _close(self.fd)
        except Exception:
            pass
        with _Mapped._lock:
            _Mapped.live -= 1


def file_identity(st) -> tuple:
    """What tells a file's contents changed: device, inode, size, modification time."""
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


class _Open:
    """An input file open for reading: a Parquet reader, or an Arrow IPC reader over a
    leased map (``mapped``) or over the file itself. ``stat()`` is the identity of the
    file being read (None for a remote file)."""

    def __init__(self, src: Source, planned=None):
        self.path = src.path
        self.file = self.pf = self.reader = self.mapped = None
        self.first = None  # an Arrow IPC file's first record batch, once read
        try:
            if src._loc is not None:
                self.file = storage.open_input(src._loc)
            elif src.kind == "arrow":
                self.mapped = _Mapped.open(src.path)
            if self.file is None and self.mapped is None:
                self.file = pa.OSFile(src.path)
            if planned is not None and self.stat() not in (None, planned):
                raise InvalidInputError(CHANGED, source=src.path)  # before its footer is parsed
            if src.kind == "parquet":
                self.pf = pq.ParquetFile(self.file, buffer_size=PARQUET_BUFFER_BYTES, pre_buffer=False)
            else:
                self.reader = pa.ipc.open_file(self.file if self.mapped is None else pa.BufferReader(self.mapped.buffer()))
        except BaseException:
            self.close()
            raise

    def stat(self):
        if self.mapped is not None:
            return file_identity(os.fstat(self.mapped.fd))
        if isinstance(self.file, pa.OSFile):
            return file_identity(os.fstat(self.file.fileno()))
        return None

    def reopen_parquet(self) -> pq.ParquetFile:
        """Another reader of the same file (a decoder thread's own): through
        ``/proc/self/fd`` where there is one, so it is the file being read even if another
        was renamed over its name meanwhile."""
        fd_path = f"/proc/self/fd/{self.file.fileno()}"
        f = pa.OSFile(fd_path if os.path.exists(fd_path) else self.path)
        if file_identity(os.fstat(f.fileno())) != self.stat():
            f.close()
            raise InvalidInputError(CHANGED, source=self.path)
        return pq.ParquetFile(f, buffer_size=PARQUET_BUFFER_BYTES, pre_buffer=False)

    def first_batch(self):
        if self.first is None and self.reader.num_record_batches:
            self.first = self.reader.get_batch(0)
        return self.first

    def close(self) -> None:
        """Drop the readers and close the file (a map lives on while batches view it)."""
        self.pf = self.reader = self.first = self.mapped = None
        if self.file is not None:
            try:
                self.file.close()
            except OSError:
                pass
            self.file = None


def _zero_copy(state: _Open) -> bool:
    if state.mapped is None or not state.reader.num_record_batches:
        return False
    lo, hi = state.mapped.span
    batch = state.reader.get_batch(0)
    return all(lo <= b.address < hi for c in batch.columns for b in c.buffers() if b is not None and b.size)


def _shared(schema: pa.Schema, schemas: dict | None) -> pa.Schema:
    """``schema`` without its metadata (pandas' differs from file to file), one object for
    every file of that schema (``schemas``: the run's table of them)."""
    schema = schema.remove_metadata()
    if schemas is None:
        return schema
    return schemas.setdefault(schema.serialize().to_pybytes(), schema)


class Source:
    """One input file: its schema, its row count, and its batches (only the named columns).
    ``path`` may be a ``storage.Location``: read by ranged requests through the same
    buffered stream (pre-buffering off), never downloaded whole.

    Making one reads the file's footer (schema, row count, row groups; ``schemas``, a dict
    shared by a run's sources, makes files of one schema share one schema object) and its
    identity (device, inode, size, modification time), then closes it: a run over 100,000
    files holds a few open at a time. ``batches`` (and ``reading``) opens it again, refusing
    a file that is no longer the one planned, and closes it after the last batch. A file
    that changes while it is read is refused (``CHANGED``): a memory-mapped Arrow IPC file is
    held by a read lease (``_Mapped``), anything else is checked when its reading starts,
    after its last batch, and when a read fails."""

    __slots__ = ("path", "kind", "schema", "num_rows", "_loc", "_stat", "_groups", "_zero_copy",
                 "_state", "_span", "_map_owner", "_released")

    def __init__(self, path, schemas: dict | None = None):
        self._loc = path if isinstance(path, storage.Location) else None
        self.path = str(path)
        self.kind = "arrow" if self.path.lower().endswith(IPC_EXT) else "parquet"
        self._state = self._span = self._map_owner = None
        self._released = 0
        state = self._open()
        try:
            if self.kind == "parquet":
                self.schema = _shared(state.pf.schema_arrow, schemas)
                self.num_rows = state.pf.metadata.num_rows
                self._groups = state.pf.metadata.num_row_groups
                self._zero_copy = False
            else:
                self.schema = _shared(state.reader.schema, schemas)
                self.num_rows = state.reader.count_rows()
                self._groups = state.reader.num_record_batches
                self._zero_copy = self._loc is None and _zero_copy(state)
            self._stat = state.stat()
        except (OSError, pa.ArrowException) as exc:
            raise self._error(exc) from None
        finally:
            state.close()

    def _open(self, planned=None) -> _Open:
        try:
            return _Open(self, planned)
        except (OSError, pa.ArrowException) as exc:
            raise self._error(exc) from None

    def _error(self, exc) -> InvalidInputError:
        if self._loc is not None and not isinstance(exc, pa.ArrowInvalid):  # the store, not the file
            return storage.explain(exc, self._loc, "cannot read")
        return self._local_error(exc)

    def _local_error(self, exc) -> InvalidInputError:
        path = self.path
        if isinstance(exc, FileNotFoundError):
            return InvalidInputError("no such file", source=path)
        if isinstance(exc, PermissionError):
            return InvalidInputError("permission denied", source=path)
        what = "Parquet" if self.kind == "parquet" else "Arrow IPC/Feather"
        return InvalidInputError(f"cannot read as {what} ({exc})", source=path)

    def _changed(self, state: _Open) -> bool:
        """The file being read is no longer the one planned (or its lease is being broken)."""
        if state.mapped is not None and state.mapped.broken():
            return True
        try:
            now = state.stat()
        except OSError:
            return True
        return now is not None and self._stat is not None and now != self._stat

    def _check(self, state: _Open) -> None:
        if self._changed(state):
            raise InvalidInputError(CHANGED, source=self.path)

    @contextmanager
    def reading(self):
        """The file open for reading (``batches`` and ``bytes_per_row`` use it, opening it
        only once) and checked to be the file planned; closed at the end."""
        if self._state is not None:
            yield self._state
            return
        state = self._open(self._stat)
        try:
            self._check(state)
            self._state = state
            if state.mapped is not None:
                self._map_owner, self._span, self._released = state.mapped.mm, state.mapped.span, 0
            yield state
        finally:
            self._state = self._map_owner = self._span = None
            state.close()

    def zero_copy(self) -> bool:
        """True for a memory-mapped, uncompressed Arrow IPC file: its batches are views of
        the map, reading them decodes nothing (the engine then gives every core to the
        kernels). Compressed IPC (Feather's LZ4 default), remote files, Parquet, a file that
        cannot be leased (``_Mapped``): False. Found when the source is made."""
        return self._zero_copy

    def _release_behind(self, batch) -> None:
        """Drop this process's mapping of the file's pages more than ``RELEASE_BEHIND``
        bytes before ``batch`` (``madvise(MADV_DONTNEED)``; they stay in the page cache):
        resident memory stays flat with the file's size instead of growing to all of it.
        Dropping a page still in use costs a re-read from the page cache, never a value."""
        mm = self._map_owner
        if mm is None or not hasattr(mm, "madvise"):
            return
        lo, _ = self._span
        starts = [b.address for c in batch.columns for b in c.buffers() if b is not None and b.size]
        if not starts:
            return
        end = (min(starts) - lo - RELEASE_BEHIND) // mmap.PAGESIZE * mmap.PAGESIZE
        if end > self._released:
            mm.madvise(mmap.MADV_DONTNEED, self._released, end - self._released)
            self._released = end

    def bytes_per_row(self, columns) -> float:
        """Decoded size of a row of ``columns``: from the first row group's metadata
        (Parquet) or the first record batch (Arrow IPC: a view of the map, or the batch the
        reading starts with); 0 when the file has no rows."""
        names = set(columns)
        with self.reading() as state:
            if self.kind == "arrow":
                batch = state.first_batch()
                if batch is None or batch.num_rows == 0:
                    return 0.0
                return batch.select([n for n in batch.schema.names if n in names]).nbytes / batch.num_rows
            if state.pf.metadata.num_row_groups == 0:
                return 0.0
            rg = state.pf.metadata.row_group(0)
            size = sum(
                rg.column(j).total_uncompressed_size
                for j in range(rg.num_columns)
                if rg.column(j).path_in_schema.split(".")[0] in names
            )
            return size / max(rg.num_rows, 1)

    def decoder_threads(self, wanted: int) -> int:
        """Threads that decode this file's batches when ``wanted`` are offered: a local
        Parquet file of several row groups takes them all (one per row group at a time),
        anything else one (remote files are read through one stream; Arrow IPC needs
        no decoding or decodes batch by batch)."""
        if self.kind == "parquet" and self._loc is None and self._groups > 1:
            return max(1, wanted)
        return 1

    def batches(self, columns, batch_rows: int, decoders: int = 1):
        """Record batches of at most ``batch_rows`` rows holding ``columns``, in file order,
        decoded by ``decoder_threads(decoders)`` threads, each on its own row groups
        (``rowgroups.ordered_batches``), at most ``DECODE_AHEAD`` bytes decoded ahead of the
        row group being read. The file is open from the first batch to the last; one that
        changed meanwhile is ``InvalidInputError`` (``CHANGED``)."""
        with self.reading() as state:
            try:
                yield from self._read(state, columns, batch_rows, decoders)
            except (pa.ArrowInvalid, pa.ArrowIOError, OSError) as exc:
                raise self._read_error(state, exc) from None
            self._check(state)

    def _read_error(self, state: _Open, exc) -> InvalidInputError:
        """A failed read: the file changed under the reader (a truncation is a short read),
        the store failed, or the file is corrupt."""
        if self._loc is None and self._changed(state):
            return InvalidInputError(CHANGED, source=self.path)
        if self._loc is not None and not isinstance(exc, pa.ArrowInvalid):  # the store, not the file
            return storage.explain(exc, self._loc, "cannot read")
        return InvalidInputError(f"cannot decode the file, it may be corrupt or truncated ({exc})", source=self.path)

    def _read(self, state: _Open, columns, batch_rows: int, decoders: int):
        if self.kind == "parquet":
            threads = self.decoder_threads(decoders)
            if threads > 1:
                yield from rowgroups.ordered_batches(
                    state.reopen_parquet, self._groups, columns, batch_rows, threads, DECODE_AHEAD,
                )
            else:
                yield from state.pf.iter_batches(batch_size=batch_rows, columns=columns, use_threads=True)
            return
        for i in range(state.reader.num_record_batches):
            if state.mapped is not None and state.mapped.broken():
                raise InvalidInputError(CHANGED, source=self.path)
            b = state.first_batch() if i == 0 else state.reader.get_batch(i)
            state.first = None
            self._release_behind(b)
            b = b.select(columns)
            for start in range(0, b.num_rows, batch_rows):
                yield b.slice(start, batch_rows)


def plan_sources(files) -> list[Source]:
    """A ``Source`` for every file, files of one schema sharing one schema object."""
    schemas: dict = {}
    return [Source(f, schemas) for f in files]


def distinct_schemas(sources) -> list[tuple[str, pa.Schema]]:
    """``[(path, schema)]``, one per distinct schema (the first file that has it): what
    ``columns.plan_inputs`` needs to check and unify them all, once per schema."""
    seen: dict = {}
    for s in sources:
        seen.setdefault(id(s.schema), (s.path, s.schema))
    return list(seen.values())


def output_format(path: str, fmt: str | None) -> str:
    """The output format: ``fmt``, else from the extension; standard output (``-``) takes
    the text formats only, named with ``--format csv|jsonl``."""
    if fmt and fmt not in FORMAT_CHOICES:
        raise InvalidInputError(f"--format must be one of {', '.join(FORMAT_CHOICES)}; got {fmt!r}")
    if path == "-":
        if fmt not in ("csv", "jsonl"):
            raise InvalidInputError("-o - writes to standard output: name the format with --format csv or --format jsonl")
        return fmt
    if fmt:
        return fmt
    ext = Path(path).suffix.lower()
    if ext not in FORMATS:
        raise InvalidInputError(
            f"cannot tell the output format from {path!r}: use a .parquet, .csv, .jsonl/.ndjson "
            "or .arrow/.feather name, or --format"
        )
    return FORMATS[ext]


def _write_all(f, data) -> None:
    """Every byte of ``data`` written to ``f``. A buffered file's ``write`` may take part of
    what it is given and say so without an error (the reader of a pipe went away, or the
    disk filled, part-way through): the rest is written again, and that call raises the
    error (EPIPE, ENOSPC). A write never ends a run with its output silently cut short."""
    view = memoryview(data).cast("B")
    while view:
        n = f.write(view)
        if not n:
            raise OSError(errno.EIO, "the output took no bytes")
        view = view[n:]


class _WholeWrites:
    """A binary file whose ``write`` writes all it is given (``_write_all``); everything else
    is the file's own."""

    def __init__(self, f):
        self._f = f

    def write(self, data) -> int:
        _write_all(self._f, data)
        return memoryview(data).nbytes

    def __getattr__(self, name):
        return getattr(self._f, name)


# ---- text formats: values as text --------------------------------------------------------

# A text writer converts and writes at most this many rows at a time (its memory stays
# bounded whatever the size of the batches it is given).
TEXT_ROWS = 65536
_TEXT = pa.large_string()  # 64-bit offsets: a slice's text never overflows


def _lit(text: str):
    return pa.scalar(text, _TEXT)


class _NotUtf8(Exception):
    """A binary value that is not valid UTF-8 (``_converted`` finds its row)."""


def _is_binary(t) -> bool:
    return (pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_fixed_size_binary(t)
            or _is_view(t, "binary"))


def _is_view(t, kind: str) -> bool:
    """``t`` is a ``binary_view`` / ``string_view`` (types that older pyarrow lacks)."""
    test = getattr(pa.types, f"is_{kind}_view", None)
    return test is not None and test(t)


def _utf8(arr):
    """A binary array (binary, large, fixed-size or view) as text: each value decoded as
    UTF-8, as old Spark / Impala dumps that store strings as binary expect."""
    try:
        return arr.cast(_TEXT)
    except pa.ArrowInvalid:
        raise _NotUtf8 from None


def _csv_text(arr):
    """``arr`` as CSV can write it: dictionary-encoded values decoded, binary decoded as
    UTF-8, string views as strings; anything else as it is."""
    t = arr.type
    if pa.types.is_dictionary(t):
        return _csv_text(arr.dictionary_decode())
    if _is_binary(t):
        return _utf8(arr)
    if _is_view(t, "string"):
        return arr.cast(_TEXT)
    return arr


def _first_failing(arr, convert) -> int:
    """The index of the first value of ``arr`` that ``convert`` refuses (by halves: each
    value is converted about twice)."""
    lo, n = 0, len(arr)  # arr[lo:lo + n] holds a refused value
    while n > 1:
        half = n // 2
        try:
            convert(arr.slice(lo, half))
            lo, n = lo + half, n - half
        except _NotUtf8:
            n = half
    return lo


def _converted(col, convert, name: str, first_row: int, what: str):
    """``convert`` applied to each chunk of the column ``col`` whose first row is output
    row ``first_row``; a value that is not valid UTF-8 is an ``InvalidInputError`` naming
    the column and the row."""
    chunks, row = [], first_row
    for chunk in col.chunks or [pa.nulls(0, col.type)]:
        try:
            chunks.append(convert(chunk))
        except _NotUtf8:
            raise InvalidInputError(
                f"binary value that is not valid UTF-8; {what} writes binary --keep columns as UTF-8 "
                "text: write Parquet or Arrow to keep it as bytes, or do not keep it",
                row=row + _first_failing(chunk, convert), column=name,
            ) from None
        row += len(chunk)
    return pa.chunked_array(chunks)


# JSON text. The functions that build it import pyarrow.compute themselves, not this
# module: a run that writes no JSON Lines never loads it.
_NULL = "null"
# printable ASCII but '"' and '\': the strings json.dumps writes as they are, in quotes
_PLAIN_JSON = r"^[ !#-\[\]-~]*$"
_NON_FINITE = (("nan", _NULL), ("-nan", _NULL), ("inf", "Infinity"), ("-inf", "-Infinity"))


def _json_strings(s):
    """JSON text of a large_string array, escaped exactly as ``json.dumps`` escapes (ASCII
    out): most values are quoted as they are, the few that need escaping go through it."""
    import pyarrow.compute as pc

    quoted = pc.binary_join_element_wise(_lit('"'), s, _lit('"'), _lit(""))
    escape = pc.invert(pc.match_substring_regex(s, _PLAIN_JSON)).fill_null(False)
    if pc.any(escape).as_py():
        escaped = [json.dumps(v) for v in s.filter(escape).to_pylist()]
        quoted = pc.replace_with_mask(quoted, escape, pa.array(escaped, _TEXT))
    return quoted


def _json_floats(arr):
    """The shortest text that reads back as the same value of the array's float type (as
    Arrow's cast and its CSV writer write it); NaN is ``null``, +-inf ``Infinity`` /
    ``-Infinity``."""
    import pyarrow.compute as pc

    text = arr.cast(_TEXT)
    for word, token in _NON_FINITE:
        text = pc.if_else(pc.equal(text, _lit(word)), _lit(token), text)
    return text


def _list_json(arr):
    """``[a, b]`` for each list (list, large list, fixed-size list) of ``arr``."""
    import pyarrow.compute as pc

    t = arr.type
    if pa.types.is_fixed_size_list(t):
        size = t.list_size
        values = arr.values.slice(arr.offset * size, len(arr) * size)
        offsets = pa.array(np.arange(len(arr) + 1, dtype=np.int64) * size)
    else:
        offsets = np.asarray(arr.offsets, dtype=np.int64)
        values = arr.values.slice(int(offsets[0]), int(offsets[-1] - offsets[0]))
        offsets = pa.array(offsets - offsets[0])
    joined = pc.binary_join(pa.LargeListArray.from_arrays(offsets, _json_text(values)), _lit(", "))
    text = pc.binary_join_element_wise(_lit("["), joined, _lit("]"), _lit(""))
    return pc.if_else(arr.is_null(), pa.scalar(None, _TEXT), text)


def _struct_json(arr):
    """``{"field": value, ...}`` for each struct of ``arr``."""
    import pyarrow.compute as pc

    t = arr.type
    if t.num_fields == 0:
        text = pa.array(["{}"] * len(arr), _TEXT)
    else:
        parts = []
        for i in range(t.num_fields):
            key = ("{" if i == 0 else ", ") + json.dumps(t.field(i).name) + ": "
            parts += [_lit(key), _json_text(arr.field(i))]
        text = pc.binary_join_element_wise(*parts, _lit("}"), _lit(""))
    return pc.if_else(arr.is_null(), pa.scalar(None, _TEXT), text)


def _finite(v):
    """A Python value with every NaN in it (lists and dicts included) made None."""
    if isinstance(v, float) and math.isnan(v):
        return None
    if isinstance(v, dict):
        return {k: _finite(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_finite(x) for x in v]
    return v


def _json_default(v):
    if isinstance(v, bytes):
        try:
            return v.decode()
        except UnicodeDecodeError:
            raise _NotUtf8 from None
    return str(v)


def _json_text(arr):
    """Each value of ``arr`` as JSON text (a large_string array, no nulls): null and NaN
    ``null``; numbers and booleans as Arrow writes them (floats in the shortest text of
    their own type, as in CSV); strings, and binary decoded as UTF-8, escaped as
    ``json.dumps`` escapes; lists and structs of these built from their values' text;
    anything else (timestamps, decimals, maps ...) through ``json.dumps``, as a string
    where JSON has no such value."""
    t = arr.type
    if pa.types.is_dictionary(t):
        return _json_text(arr.dictionary_decode())
    if pa.types.is_floating(t):
        text = _json_floats(arr)
    elif pa.types.is_integer(t) or pa.types.is_boolean(t) or pa.types.is_null(t):
        text = arr.cast(_TEXT)
    elif pa.types.is_string(t) or pa.types.is_large_string(t) or _is_view(t, "string"):
        text = _json_strings(arr.cast(_TEXT))
    elif _is_binary(t):
        text = _json_strings(_utf8(arr))
    elif pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        text = _list_json(arr)
    elif pa.types.is_struct(t):
        text = _struct_json(arr)
    else:
        text = pa.array([json.dumps(_finite(v), default=_json_default) for v in arr.to_pylist()], _TEXT)
    return text.fill_null(_lit(_NULL))


def _text_bytes(lines):
    """The bytes of a large_string array without nulls, values back to back."""
    for chunk in lines.chunks:
        if len(chunk) == 0:
            continue
        _, offsets, data = chunk.buffers()
        first, last = np.frombuffer(offsets, dtype=np.int64)[[chunk.offset, chunk.offset + len(chunk)]]
        yield data[int(first):int(last)]


class _JsonLines:
    """JSON Lines, one object per row, keys in column order (``{"id": 7, "cce": 0.25}``).
    NaN and null are ``null``; +-inf are the bare tokens ``Infinity`` / ``-Infinity`` (as
    Python's ``json`` writes them), which ``xent report``, ``pyarrow.json``, pandas and
    Python's ``json`` read back as floats. A float is written in the shortest text that
    reads back as the same value of its own type (float32 ``0.32417148``), the same text
    as CSV; strings are escaped as ``json.dumps`` escapes (ASCII out); binary is decoded as
    UTF-8 (``InvalidInputError`` naming the column and the row where it is not)."""

    def __init__(self, f):
        self._f = f
        self._rows = 0  # rows written: the output row number of the next one

    def write_table(self, table: pa.Table) -> None:
        import pyarrow.compute as pc

        for start in range(0, table.num_rows, TEXT_ROWS):
            part = table.slice(start, TEXT_ROWS)
            pieces = []
            for i, name in enumerate(part.column_names):
                key = ("{" if i == 0 else ", ") + json.dumps(name) + ": "
                pieces += [_lit(key), _converted(part.column(i), _json_text, name, self._rows, "JSON Lines")]
            lines = pc.binary_join_element_wise(*pieces, _lit("}\n"), _lit(""))
            for data in _text_bytes(lines):
                _write_all(self._f, data)
            self._rows += part.num_rows

    def close(self) -> None:
        pass


def _csv_table(table: pa.Table, first_row: int) -> pa.Table:
    """``table`` with every column as CSV can write it (``_csv_text``)."""
    names = table.column_names
    cols = [_converted(table.column(i), _csv_text, name, first_row, "CSV") for i, name in enumerate(names)]
    return pa.Table.from_arrays(cols, names=names)


class _Csv:
    """CSV with a header row. A null is an empty field; in a one-column file, where an empty
    field is an empty line that CSV readers skip (the rows would shift), it is ``""``, which
    pyarrow, pandas and Python's ``csv`` read as a missing value. Dictionary-encoded values
    are written decoded, binary decoded as UTF-8 (``InvalidInputError`` naming the column
    and the row where it is not)."""

    def __init__(self, f, schema: pa.Schema):
        self._f = f
        self._schema = schema
        self._header = True
        self._one_column = len(schema) == 1
        self._rows = 0  # rows written: the output row number of the next one

    def write_table(self, table: pa.Table) -> None:
        for start in range(0, max(table.num_rows, 1), TEXT_ROWS):
            self._write_part(_csv_table(table.slice(start, TEXT_ROWS), self._rows))

    def _write_part(self, table: pa.Table) -> None:
        options = pacsv.WriteOptions(include_header=self._header)
        self._header = False
        buf = pa.BufferOutputStream()
        pacsv.write_csv(table, buf, options)
        data = buf.getvalue()
        if self._one_column and table.column(0).null_count:
            lines = data.to_pybytes().split(b"\n")
            body = [line or b'""' for line in lines[:-1]]
            if options.include_header:
                body[0] = lines[0]
            data = b"\n".join(body) + b"\n"
        _write_all(self._f, data)
        self._rows += table.num_rows

    def close(self) -> None:
        if self._header:  # no rows: the header alone
            self.write_table(self._schema.empty_table())


def _is_number(t) -> bool:
    return pa.types.is_floating(t) or pa.types.is_integer(t) or pa.types.is_decimal(t)


def _is_plain_number(t) -> bool:
    return pa.types.is_floating(t) or pa.types.is_integer(t)


def _parquet_compression(schema: pa.Schema) -> dict:
    """Per leaf column (Parquet names nested leaves ``name.list.element``): no compression
    for top-level integers and floats, Snappy (pyarrow's default) for everything else."""
    buf = pa.BufferOutputStream()
    pq.ParquetWriter(buf, schema).close()  # (not write_table: it imports pandas)
    leaves = pq.ParquetFile(pa.BufferReader(buf.getvalue())).schema
    plain = {f.name for f in schema if _is_plain_number(f.type)}
    return {c.path: "none" if c.path in plain else "snappy" for c in (leaves.column(i) for i in range(len(leaves)))}


def csv_unwritable(schema: pa.Schema) -> str | None:
    """The first column of ``schema`` that CSV cannot hold (lists, structs, ...), or None."""
    for field in schema:
        try:
            pacsv.write_csv(_csv_table(pa.schema([field]).empty_table(), 0), pa.BufferOutputStream())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
            return field.name
    return None


# ---- where the output goes: checks made before any work, atomic commit -------------------

STDOUT = "-"
# a Dask output directory may be replaced (--overwrite) only when it holds nothing else
_DATASET_FILES = ("_metadata", "_common_metadata")


def is_stdout(path) -> bool:
    return str(path) == STDOUT


# Names of a descriptor that is already open (standard output, /dev/fd/N, /proc/<pid>/fd/N):
# it may be a pipe, a terminal or a redirected file, and is written through, never renamed over
_DESCRIPTOR = re.compile(r"/dev/(stdin|stdout|stderr|fd/\d+)|/proc/(self|thread-self|\d+)(/task/\d+)?/fd/\d+")


def is_special(path) -> bool:
    """A path written in place, never renamed over: the name of an open descriptor
    (``/dev/stdout``, ``/dev/fd/1``, ``/proc/self/fd/1``, or a symlink chain that reaches
    one: a link to /proc/self/fd/1 is stdout), or an existing file that is a character or
    block device (``/dev/null``, a terminal), a FIFO or a socket. Decided by the file's
    type, never by its folder: a regular file, or a new name, under /dev/shm is an ordinary
    output (existence check, ``--overwrite``, temporary file and rename)."""
    path = os.path.abspath(str(path))
    for _ in range(40):  # every hop of a symlink chain
        path = os.path.join(os.path.realpath(os.path.dirname(path)), os.path.basename(path))
        if _DESCRIPTOR.fullmatch(path):
            return True
        if not os.path.islink(path):
            break
        path = os.path.join(os.path.dirname(path), os.readlink(path))
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False
    return stat.S_ISCHR(mode) or stat.S_ISBLK(mode) or stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)


def _inside(child: str, parent: str) -> bool:
    """``child`` is ``parent`` or lies under it (both resolved paths)."""
    try:
        return os.path.commonpath([child, parent]) == parent
    except ValueError:
        return False


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def looks_like_dataset(path) -> bool:
    """A directory this tool may replace: empty, or only Parquet part files
    (``part.*.parquet``) and ``_metadata`` / ``_common_metadata``, as ``--engine dask`` writes."""
    for entry in os.scandir(path):
        ours = entry.name in _DATASET_FILES or (entry.name.startswith("part.") and entry.name.endswith(".parquet"))
        if not ours or not entry.is_file(follow_symlinks=False):
            return False
    return True


def check_output(path, files, *, given=(), overwrite: bool = False, what: str = "OUTPUT",
                 directory: bool = False) -> None:
    """Refuse, before any work, an output path that would destroy what the user did not ask
    to replace: one that is (by name, symlink or hard link), contains, or lies inside an
    input (``files``: the input files; ``given``: the INPUT arguments, directories among
    them) -- even with ``overwrite`` --, an existing path without ``overwrite``, a directory
    (``directory``: a Dask dataset directory that holds anything but part files), a missing
    or unwritable folder. Standard output (``-``) and special files are always allowed."""
    path = storage.local_path(str(path))
    if is_stdout(path) or is_special(path) or storage.is_url(path):
        return  # a URL: checked by ``storage.RemoteOutput`` when the writer is made
    real = os.path.realpath(path)
    # a name that does not exist is no input and holds none: no look at each of (perhaps
    # 100,000) input files
    for f in files if os.path.lexists(path) else ():
        if isinstance(f, storage.Location):
            continue
        if os.path.realpath(f) == real or _same_file(f, path):
            raise InvalidInputError(f"{what} {path} is the input file {f}; it is never replaced, even with --overwrite")
        if _inside(os.path.realpath(f), real):
            raise InvalidInputError(f"{what} {path} contains the input file {f}; it is never replaced, even with --overwrite")
    for g in given:
        g = str(g)
        if os.path.isdir(g) and _inside(real, os.path.realpath(g)):
            raise InvalidInputError(f"{what} {path} lies inside the input directory {g}; write it elsewhere")
    if os.path.lexists(path):
        if not overwrite:
            raise InvalidInputError(f"{what} {path} exists; pass --overwrite to replace it")
        if os.path.isdir(path):
            if not directory:
                raise InvalidInputError(f"{what} {path} is a directory")
            if not looks_like_dataset(path):
                raise InvalidInputError(
                    f"{what} {path} is a directory that holds more than the part files xent score "
                    "writes; it is not replaced, even with --overwrite (remove it yourself or choose another name)"
                )
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise InvalidInputError(f"{what} {path}: output directory does not exist ({parent})")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InvalidInputError(f"{what} {path}: output directory is not writable ({parent})")


def temp_name(path) -> Path:
    """The temporary name beside ``path`` that a run writes to before the final rename."""
    path = Path(path)
    return path.parent / f".{path.name}.tmp-{uuid.uuid4().hex[:8]}"


_RENAME_NOREPLACE = 1
_AT_FDCWD = -100


def _renameat2(src: str, dst: str) -> bool:
    """Linux ``renameat2(RENAME_NOREPLACE)``: True when done, False when unavailable here;
    ``FileExistsError`` when ``dst`` exists."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    rc = fn(_AT_FDCWD, os.fsencode(src), _AT_FDCWD, os.fsencode(dst), _RENAME_NOREPLACE)
    if rc == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EEXIST, errno.ENOTEMPTY):
        raise FileExistsError(err, os.strerror(err), dst)
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), dst)


def rename_into_place(tmp, path, overwrite: bool) -> None:
    """``tmp`` renamed to ``path``. Without ``overwrite`` a ``path`` that appeared meanwhile
    (another run) is never replaced: ``InvalidInputError``, ``tmp`` left for the caller."""
    tmp, path = str(tmp), str(path)
    if overwrite:
        os.replace(tmp, path)
        return
    try:
        if not _renameat2(tmp, path):
            if os.path.isdir(tmp):  # no atomic way left: the check and the rename race
                if os.path.lexists(path):
                    raise FileExistsError(errno.EEXIST, "exists", path)
                os.rename(tmp, path)
            else:
                os.link(tmp, path)  # fails when path exists
                os.unlink(tmp)
    except FileExistsError:
        raise InvalidInputError(
            f"{path} appeared while this run was writing it (another run?); it is left as it is "
            "and this run's output is discarded"
        ) from None


def write_error(path, exc: OSError) -> InvalidInputError:
    """An OSError met while writing ``path``, as one clear line."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT) or "No space left" in str(exc):
        return InvalidInputError(f"{path}: disk full while writing the output; the partial file was removed")
    err = InvalidInputError(f"{path}: cannot write the output ({exc.strerror or exc})")
    # the reader of a pipe went away (`xent score ... -o - | head`): the CLI exits quietly
    # with 141 (128 + SIGPIPE), as a shell tool killed by SIGPIPE would
    err.pipe_closed = exc.errno == errno.EPIPE
    return err


def write_text(path, text: str, overwrite: bool) -> None:
    """``text`` written atomically to ``path`` (a temporary file renamed into place), or to
    standard output / a special file in place."""
    try:
        if is_stdout(path):
            sys.stdout.flush()
            _write_all(sys.stdout.buffer, text.encode())
            sys.stdout.buffer.flush()
            return
        if is_special(path):
            with open(path, "ab") as f:
                _write_all(f, text.encode())
            return
    except OSError as exc:
        raise write_error(path, exc) from None
    tmp = temp_name(path)
    try:
        with deferred_signals():
            with open(tmp, "xb") as f:
                _write_all(f, text.encode())
            rename_into_place(tmp, path, overwrite)
    except OSError as exc:
        raise write_error(path, exc) from None
    finally:
        tmp.unlink(missing_ok=True)


# Scored batches are gathered until this many rows or bytes before they are written: the
# output's row groups (Parquet) or record batches (Arrow) keep a sane size whatever the
# scoring batch (``--batch-rows 1`` would otherwise write a row group per row).
WRITE_ROWS = 65536
WRITE_BYTES = 8 << 20
_PENDING_BATCHES = 256


class AtomicWriter:
    """Writes record batches to a temporary file beside ``path`` (created at once, so an
    unwritable folder fails before any work); ``commit`` renames it into place, ``abort``
    removes it. A failed or interrupted run leaves nothing behind. Standard output (``-``)
    and special files (``/dev/stdout``, a pipe) are written in place instead. Call
    ``check_output`` first."""

    def __init__(self, path: str, fmt: str, overwrite: bool, storage_options=None, inputs=()):
        path = storage.local_path(str(path))
        self.path = Path(path)
        self.fmt = fmt
        self.overwrite = overwrite
        self.tmp = None
        self._writer = None
        self._pending: list = []
        self._rows = self._bytes = 0
        self._remote = None
        if storage.is_url(path):  # written under a temporary key, moved into place by commit
            self._remote = storage.RemoteOutput(path, storage_options, overwrite, inputs)
            self._file = self._remote.open()
            self._owned = True
        elif is_stdout(path):
            self._file = _WholeWrites(sys.stdout.buffer)
            self._owned = False
        elif is_special(path):
            try:
                self._file = _WholeWrites(open(path, "ab"))
            except OSError as exc:
                raise write_error(path, exc) from None
            self._owned = True
        else:
            self.tmp = temp_name(path)
            try:
                self._file = _WholeWrites(open(self.tmp, "xb"))
            except OSError as exc:
                raise InvalidInputError(
                    f"{path}: cannot create the output in {self.tmp.parent} ({exc.strerror or exc})"
                ) from None
            self._owned = True

    def write(self, batch: pa.RecordBatch) -> None:
        self._pending.append(batch)
        self._rows += batch.num_rows
        self._bytes += batch.nbytes
        if self._rows >= WRITE_ROWS or self._bytes >= WRITE_BYTES:
            self._flush(batch.schema)
        elif len(self._pending) >= _PENDING_BATCHES:  # many tiny batches: one object, not thousands
            self._pending = [pa.concat_batches(self._pending)]

    def _flush(self, schema: pa.Schema) -> None:
        try:
            if self._writer is None:
                self._open(schema)
            if self._pending:
                table = pa.Table.from_batches(self._pending, schema=schema).combine_chunks()
                self._pending, self._rows, self._bytes = [], 0, 0
                if self.fmt == "parquet":
                    self._writer.write_table(table, row_group_size=max(table.num_rows, 1))
                else:
                    self._writer.write_table(table)
        except OSError as exc:
            raise self._write_error(exc) from None

    def _write_error(self, exc: OSError) -> InvalidInputError:
        return self._remote.error(exc) if self._remote else write_error(self.path, exc)

    def _open(self, schema: pa.Schema) -> None:
        if self.fmt == "parquet":
            # dictionary encoding only where it pays: on losses and other numbers it hashes
            # every value, to fall back to plain encoding anyway (a cost far above the write)
            dictionary = [f.name for f in schema if not _is_number(f.type)]
            # Snappy only where it pays: losses (and other floats) are noise to it; integer
            # columns (ids) shrink 2x, but compressing them adds a large share to the cost
            # of writing the output. Numbers are written plain and uncompressed (as every
            # Parquet reader takes them); strings and the rest keep dictionary + Snappy.
            compression = _parquet_compression(schema)
            self._writer = pq.ParquetWriter(self._file, schema, use_dictionary=dictionary, compression=compression)
        elif self.fmt == "csv":
            self._writer = _Csv(self._file, schema)
        elif self.fmt == "jsonl":
            self._writer = _JsonLines(self._file)
        else:
            self._writer = pa.ipc.new_file(self._file, schema)

    def commit(self, schema: pa.Schema) -> None:
        """Write what is pending (an empty file with the columns when there were no rows),
        then rename the temporary file into place."""
        self._flush(schema)
        try:
            self._writer.close()
            self._file.flush()
            if self._owned:
                self._file.close()
        except OSError as exc:
            raise self._write_error(exc) from None
        with deferred_signals():
            check_interrupted()  # a signal whose exception was swallowed still stops the run
            if self._remote is not None:
                self._remote.commit()
            elif self.tmp is not None:
                rename_into_place(self.tmp, self.path, self.overwrite)
            output_in_place()

    def abort(self) -> None:
        """Remove the temporary file; nothing here raises, a second signal included."""
        with deferred_signals():
            try:
                if self._writer is not None:
                    self._writer.close()
            except BaseException:  # the file is being thrown away
                pass
            try:
                if self._owned:
                    self._file.close()
            except BaseException:
                pass
            finally:
                if self.tmp is not None:
                    self.tmp.unlink(missing_ok=True)
                if self._remote is not None:
                    self._remote.abort()


# ---- signals ----------------------------------------------------------------------------


class Interrupted(KeyboardInterrupt):
    """SIGINT, SIGTERM or SIGHUP received: raised in the main thread. ``exit_code`` is
    128 + the signal number (130, 143, 129), the shell's convention."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


class _SignalState:
    signum = None  # the first signal received
    at = 0.0  # when (time.monotonic)
    deferred = 0  # > 0 while a cleanup or the final rename runs: signals are only recorded
    done = False  # the output is in place: the run has succeeded, a late signal changes nothing


_SIGNALS = _SignalState()
HANDLED_SIGNALS = tuple(getattr(signal, n) for n in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, n))
# after a first signal, more within this many seconds are recorded, not raised: a second
# Ctrl-C must not cut the cleanup (or the exit) short; a run still alive later can be stopped again
REPEAT_GRACE_S = 5.0


def _on_signal(signum, frame) -> None:
    now = time.monotonic()
    repeat = _SIGNALS.signum is not None and now - _SIGNALS.at < REPEAT_GRACE_S
    if _SIGNALS.signum is None:
        _SIGNALS.signum, _SIGNALS.at = signum, now
    if not (_SIGNALS.deferred or _SIGNALS.done or repeat):
        _SIGNALS.at = now
        raise Interrupted(signum)


def install_signal_handlers() -> None:
    """SIGINT, SIGTERM and SIGHUP raise ``Interrupted`` in the main thread (the CLI calls
    this): every run then removes its temporary files on any of them. A signal that lands
    while a cleanup or the final rename runs, or within ``REPEAT_GRACE_S`` of the first, is
    recorded, not raised: the cleanup finishes."""
    _SIGNALS.signum, _SIGNALS.done = None, False
    for sig in HANDLED_SIGNALS:
        signal.signal(sig, _on_signal)


def ignore_signals() -> None:
    """Ignore SIGINT, SIGTERM and SIGHUP from here on (the CLI calls this on its way out:
    the run is over and cleaned up; a signal during interpreter shutdown, which restores
    the default handlers, would otherwise turn the exit code into a death by signal)."""
    for sig in HANDLED_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)


@contextmanager
def deferred_signals():
    """Signals received inside are recorded, not raised (cleanup must run to its end)."""
    _SIGNALS.deferred += 1
    try:
        yield
    finally:
        _SIGNALS.deferred -= 1


def output_in_place() -> None:
    """Called right after the output was renamed into place (signals deferred): from now
    on a signal is ignored, the run has succeeded (exit 0 always means a complete output,
    a signal's exit code never comes with one)."""
    _SIGNALS.done = True


def check_interrupted() -> None:
    """Raise ``Interrupted`` if a signal was received, even one whose exception was
    swallowed (e.g. raised inside a finaliser during start-up: "Exception ignored")."""
    if _SIGNALS.signum is not None:
        raise Interrupted(_SIGNALS.signum)
