"""Where the output goes: the checks made before any work (never an input, never an
existing file without --overwrite), the temporary file beside OUTPUT and its atomic
rename into place."""

from __future__ import annotations

import ctypes
import errno
import os
import re
import stat
import sys
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

try:
    import fcntl
except ImportError:  # not POSIX: no leases, mapped Arrow IPC is read through a file
    fcntl = None

from ..errors import InvalidInputError
from . import storage
from .formats import Csv, JsonLines, WholeWrites, is_number, parquet_compression, write_all
from .signals import check_interrupted, deferred_signals, output_in_place

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
            write_all(sys.stdout.buffer, text.encode())
            sys.stdout.buffer.flush()
            return
        if is_special(path):
            with open(path, "ab") as f:
                write_all(f, text.encode())
            return
    except OSError as exc:
        raise write_error(path, exc) from None
    tmp = temp_name(path)
    try:
        with deferred_signals():
            with open(tmp, "xb") as f:
                write_all(f, text.encode())
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
            self._file = WholeWrites(sys.stdout.buffer)
            self._owned = False
        elif is_special(path):
            try:
                self._file = WholeWrites(open(path, "ab"))
            except OSError as exc:
                raise write_error(path, exc) from None
            self._owned = True
        else:
            self.tmp = temp_name(path)
            try:
                self._file = WholeWrites(open(self.tmp, "xb"))
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
            dictionary = [f.name for f in schema if not is_number(f.type)]
            # Snappy only where it pays: losses (and other floats) are noise to it; integer
            # columns (ids) shrink 2x, but compressing them adds a large share to the cost
            # of writing the output. Numbers are written plain and uncompressed (as every
            # Parquet reader takes them); strings and the rest keep dictionary + Snappy.
            compression = parquet_compression(schema)
            self._writer = pq.ParquetWriter(self._file, schema, use_dictionary=dictionary, compression=compression)
        elif self.fmt == "csv":
            self._writer = Csv(self._file, schema)
        elif self.fmt == "jsonl":
            self._writer = JsonLines(self._file)
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


