"""Files in and out: input discovery, batch readers (Parquet, memory-mapped Arrow IPC /
Feather) and atomic writers (Parquet, CSV, JSON lines, Arrow IPC / Feather)."""

from __future__ import annotations

import ctypes
import errno
import json
import math
import mmap
import os
import signal
import stat
import sys
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

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


def _map_file(path: str):
    """A local file memory-mapped read-only: (an Arrow reader over the map, (first, end)
    addresses of the map, the ``mmap``). ``mmap`` (not ``pa.memory_map``) so that pages
    already read can be released. An empty file (which cannot be mapped) is opened as it
    is, to fail as an invalid Arrow file."""
    with open(path, "rb") as f:
        if os.fstat(f.fileno()).st_size == 0:
            return pa.OSFile(path), None, None
        mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    buf = pa.py_buffer(mm)
    return pa.BufferReader(buf), (buf.address, buf.address + buf.size), mm


class Source:
    """One input file: its schema, its row count, and its batches (only the named columns).
    ``path`` may be a ``storage.Location``: read by ranged requests through the same
    buffered stream (pre-buffering off), never downloaded whole."""

    def __init__(self, path):
        self._loc = path if isinstance(path, storage.Location) else None
        self.path = path = str(path)
        self.kind = "arrow" if path.lower().endswith(IPC_EXT) else "parquet"
        try:
            if self._loc is not None:
                path = storage.open_input(self._loc)
            if self.kind == "parquet":
                self._pf = pq.ParquetFile(path, buffer_size=PARQUET_BUFFER_BYTES, pre_buffer=False)
                self.schema = self._pf.schema_arrow
                self.num_rows = self._pf.metadata.num_rows
            else:
                self._map, self._span, self._map_owner = (None, None, None) if self._loc else _map_file(path)
                self._released = 0
                self._reader = pa.ipc.open_file(path if self._loc else self._map)
                self.schema = self._reader.schema
                self.num_rows = self._reader.count_rows() if self._loc else sum(
                    self._reader.get_batch(i).num_rows for i in range(self._reader.num_record_batches)
                )
        except OSError as exc:
            if self._loc is None:
                raise self._local_error(exc) from None
            raise storage.explain(exc, self._loc, "cannot read") from None
        except pa.ArrowInvalid as exc:
            raise self._local_error(exc) from None

    def _local_error(self, exc) -> InvalidInputError:
        path = self.path
        if isinstance(exc, FileNotFoundError):
            return InvalidInputError("no such file", source=path)
        if isinstance(exc, PermissionError):
            return InvalidInputError("permission denied", source=path)
        what = "Parquet" if self.kind == "parquet" else "Arrow IPC/Feather"
        return InvalidInputError(f"cannot read as {what} ({exc})", source=path)

    def zero_copy(self) -> bool:
        """True for a memory-mapped, uncompressed Arrow IPC file: its batches are views of
        the map, reading them decodes nothing (the engine then gives every core to the
        kernels). Compressed IPC (Feather's LZ4 default), remote files, Parquet: False."""
        if self.kind != "arrow" or self._span is None or self._reader.num_record_batches == 0:
            return False
        lo, hi = self._span
        batch = self._reader.get_batch(0)
        return all(lo <= b.address < hi for c in batch.columns for b in c.buffers() if b is not None and b.size)

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
        """Decoded size estimate from the Parquet metadata (0 when unknown)."""
        if self.kind != "parquet" or self._pf.metadata.num_row_groups == 0:
            return 0.0
        rg = self._pf.metadata.row_group(0)
        names = set(columns)
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
        if self.kind == "parquet" and self._loc is None and self._pf.metadata.num_row_groups > 1:
            return max(1, wanted)
        return 1

    def batches(self, columns, batch_rows: int, decoders: int = 1):
        """Record batches of at most ``batch_rows`` rows holding ``columns``, in file order,
        decoded by ``decoder_threads(decoders)`` threads, each on its own row groups
        (``rowgroups.ordered_batches``), at most ``DECODE_AHEAD`` bytes decoded ahead of the
        row group being read."""
        try:
            if self.kind == "parquet":
                threads = self.decoder_threads(decoders)
                if threads > 1:
                    yield from rowgroups.ordered_batches(
                        lambda: pq.ParquetFile(self.path, buffer_size=PARQUET_BUFFER_BYTES, pre_buffer=False),
                        self._pf.metadata.num_row_groups, columns, batch_rows, threads, DECODE_AHEAD,
                    )
                else:
                    yield from self._pf.iter_batches(batch_size=batch_rows, columns=columns, use_threads=True)
                return
            for i in range(self._reader.num_record_batches):
                b = self._reader.get_batch(i)
                self._release_behind(b)
                b = b.select(columns)
                for start in range(0, b.num_rows, batch_rows):
                    yield b.slice(start, batch_rows)
        except (pa.ArrowInvalid, pa.ArrowIOError, OSError) as exc:
            if self._loc is not None and not isinstance(exc, pa.ArrowInvalid):  # the store, not the file
                raise storage.explain(exc, self._loc, "cannot read") from None
            raise InvalidInputError(f"cannot decode the file, it may be corrupt or truncated ({exc})", source=self.path) from None


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


class _JsonLines:
    """JSON Lines, one object per row. NaN and null are ``null``; +-inf are the bare tokens
    ``Infinity`` / ``-Infinity`` (as Python's ``json`` writes them), which ``xent report``,
    ``pyarrow.json``, pandas and Python's ``json`` read back as floats."""

    def __init__(self, f):
        self._f = f

    def write_table(self, table: pa.Table) -> None:
        lines = []
        for row in table.to_pylist():
            for k, v in row.items():
                if isinstance(v, float) and math.isnan(v):
                    row[k] = None
            lines.append(json.dumps(row, default=str))
        if lines:
            self._f.write(("\n".join(lines) + "\n").encode())

    def close(self) -> None:
        pass


class _Csv:
    """CSV with a header row. A null is an empty field; in a one-column file, where an empty
    field is an empty line that CSV readers skip (the rows would shift), it is ``""``, which
    pyarrow, pandas and Python's ``csv`` read as a missing value."""

    def __init__(self, f, schema: pa.Schema):
        self._f = f
        self._schema = schema
        self._header = True
        self._one_column = len(schema) == 1

    def write_table(self, table: pa.Table) -> None:
        options = pacsv.WriteOptions(include_header=self._header)
        self._header = False
        if not (self._one_column and table.column(0).null_count):
            pacsv.write_csv(table, self._f, options)
            return
        buf = pa.BufferOutputStream()
        pacsv.write_csv(table, buf, options)
        lines = buf.getvalue().to_pybytes().split(b"\n")
        body = [line or b'""' for line in lines[:-1]]
        if options.include_header:
            body[0] = lines[0]
        self._f.write(b"\n".join(body) + b"\n")

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
    pq.ParquetWriter(buf, schema).close()  # (not write_table: it imports pandas, ~0.3 s)
    leaves = pq.ParquetFile(pa.BufferReader(buf.getvalue())).schema
    plain = {f.name for f in schema if _is_plain_number(f.type)}
    return {c.path: "none" if c.path in plain else "snappy" for c in (leaves.column(i) for i in range(len(leaves)))}


def csv_unwritable(schema: pa.Schema) -> str | None:
    """The first column of ``schema`` that CSV cannot hold (lists, structs, ...), or None."""
    for field in schema:
        try:
            pacsv.write_csv(pa.schema([field]).empty_table(), pa.BufferOutputStream())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
            return field.name
    return None


# ---- where the output goes: checks made before any work, atomic commit -------------------

STDOUT = "-"
# a Dask output directory may be replaced (--overwrite) only when it holds nothing else
_DATASET_FILES = ("_metadata", "_common_metadata")


def is_stdout(path) -> bool:
    return str(path) == STDOUT


def is_special(path) -> bool:
    """An existing path that is not a regular file or a directory (a pipe, a terminal, a
    character device), or one under /dev or /proc (``/dev/stdout``, or a symlink into them):
    written in place, never renamed over."""
    path = os.path.abspath(str(path))
    for _ in range(40):  # every hop of a symlink chain: a link to /proc/self/fd/1 is stdout
        if path.startswith(("/dev/", "/proc/")):
            return True
        if not os.path.islink(path):
            break
        path = os.path.join(os.path.dirname(path), os.readlink(path))
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False
    return not (stat.S_ISREG(mode) or stat.S_ISDIR(mode))


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
    for f in files:
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
    if is_stdout(path):
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    if is_special(path):
        with open(path, "a") as f:
            f.write(text)
        return
    tmp = temp_name(path)
    try:
        with deferred_signals():
            tmp.write_text(text)
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
            self._file = sys.stdout.buffer
            self._owned = False
        elif is_special(path):
            try:
                self._file = open(path, "ab")
            except OSError as exc:
                raise write_error(path, exc) from None
            self._owned = True
        else:
            self.tmp = temp_name(path)
            try:
                self._file = open(self.tmp, "xb")
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
            # every value, to fall back to plain encoding anyway (5x the write time of a loss)
            dictionary = [f.name for f in schema if not _is_number(f.type)]
            # Snappy only where it pays: losses (and other floats) are noise to it; integer
            # columns (ids) shrink 2x but at 8 ns a row, a third of the cost of writing the
            # output. Numbers are written plain and uncompressed (as every Parquet reader
            # takes them); strings and the rest keep dictionary + Snappy.
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
