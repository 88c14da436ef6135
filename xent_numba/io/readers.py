"""Reading one input file batch by batch: ``Source`` (Parquet through a buffered stream,
Arrow IPC / Feather memory-mapped under a read lease or read through a file), opened only
while read, and refused when it changes under the reader."""

from __future__ import annotations

import errno
import mmap
import os
import signal
import threading
from contextlib import contextmanager

import pyarrow as pa
import pyarrow.parquet as pq

try:
    import fcntl
except ImportError:  # not POSIX: no leases, mapped Arrow IPC is read through a file
    fcntl = None

from ..errors import InvalidInputError
from . import rowgroups, storage
from .inputs import IPC_EXT

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


