"""Score tables batch by batch: Arrow record batch in -> kept columns + losses out.

``score_batch`` is the unit every engine shares (the local streaming engine and the Dask
engine call it per batch / partition); it never drops or reorders rows.
"""

from __future__ import annotations

import math
import os
import queue
import threading
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from .. import api, arrow, backend, io, losses
from ..analysis.summary import Summary
from ..columns import Columns, _column, conform, plan_inputs, resolve_columns  # noqa: F401  (re-exported)
from ..errors import InvalidInputError

LOSS_CHOICES = ("cce", "bce", "both")
ON_INVALID_CHOICES = ("error", "null")


@dataclass(frozen=True)
class ScoreOptions:
    """The options of ``xent score``; each maps one-to-one onto the API's keywords."""

    loss: str = "cce"
    pred: str = "pred"
    label: str = "label"
    from_logits: bool = False
    log_base: float = math.e
    eps: object = "auto"
    label_smoothing: float = 0.0
    class_weight: tuple | None = None
    pos_weight: object = None
    ignore_index: int | None = None
    bce_reduce: str = "sum"
    keep: tuple = ()
    exclude: tuple = ()  # globs of columns left out of the wide matches of ``pred`` / ``label``
    device: str = "cpu"
    on_invalid: str = "error"
    normalize: bool = False  # CCE from probabilities: rows divided by their sums (Keras)

    def __post_init__(self):
        if self.loss not in LOSS_CHOICES:
            raise InvalidInputError(f"--loss must be one of {', '.join(LOSS_CHOICES)}; got {self.loss!r}")
        if self.on_invalid not in ON_INVALID_CHOICES:
            raise InvalidInputError(f"--on-invalid must be 'error' or 'null'; got {self.on_invalid!r}")
        if self.ignore_index is not None and not (
            isinstance(self.ignore_index, (int, np.integer)) and -(2**63) <= self.ignore_index < 2**63
        ):
            raise InvalidInputError(f"--ignore-index must be a 64-bit integer; got {self.ignore_index!r}")
        # the scalar options are checked once, up front, by the same code the API uses
        losses.make_params(
            "cce",
            dtype=np.float64,
            log_base=self.log_base,
            eps=self.eps,
            label_smoothing=self.label_smoothing,
            ignore_index=self.ignore_index,
            reduce=self.bce_reduce,
        )

    @property
    def losses(self) -> tuple[str, ...]:
        return ("cce", "bce") if self.loss == "both" else (self.loss,)

    def kernel_kwargs(self, loss: str) -> dict:
        kw = dict(
            from_logits=self.from_logits,
            log_base=self.log_base,
            eps=self.eps,
            label_smoothing=self.label_smoothing,
            device=self.device,
        )
        if loss == "cce":
            kw.update(class_weight=self.class_weight, ignore_index=self.ignore_index, normalize=self.normalize)
        else:  # BCE gives the rows of ``ignore_index`` a null score too (``api.score``)
            kw.update(pos_weight=self.pos_weight, reduce=self.bce_reduce, ignore_index=self.ignore_index)
        return kw

    def notes(self) -> list[str]:
        """Warnings about the options themselves, said once per run."""
        if self.ignore_index is not None and "bce" in self.losses:
            return [
                f"--ignore-index is a CCE option (PyTorch's); BCE gives the rows labelled "
                f"{self.ignore_index} a null score too, counted as ignored"
            ]
        return []


def score_batch(
    batch: pa.RecordBatch | pa.Table,
    opts: ScoreOptions,
    cols: Columns,
    *,
    row_offset: int = 0,
    summary: Summary | None = None,
) -> pa.RecordBatch:
    """Score one batch: the kept columns, then ``cce`` and/or ``bce`` (float, null when a row
    is invalid with ``on_invalid="null"`` or ignored via ``ignore_index``).

    With ``on_invalid="error"`` the first invalid row raises ``InvalidInputError`` whose
    message names the user's column and the global row number (``row_offset`` + row).
    """
    if isinstance(batch, pa.Table):
        batch = batch.combine_chunks().to_batches()[0] if batch.num_rows else pa.RecordBatch.from_pylist([], schema=batch.schema)
    pred = _column(batch, cols.pred)
    label = _column(batch, cols.label)
    arrays = [batch.column(k) for k in cols.keep]
    names = list(cols.keep)
    bad_any = ignored_any = None  # rows invalid / ignored under any loss (no arrays for one loss)
    on_invalid = "error" if opts.on_invalid == "error" else "nan"
    for loss in opts.losses:
        try:
            out, status = api.score(loss, pred, label, on_invalid=on_invalid, **opts.kernel_kwargs(loss))
        except InvalidInputError as e:
            raise relocate(e, cols, row_offset) from None
        null = None
        if status.size and status.max() != losses.OK:  # one pass; the masks only when a row is not OK
            bad, ignored = status > losses.IGNORED, status == losses.IGNORED
            bad_any = bad if bad_any is None else bad_any | bad
            ignored_any = ignored if ignored_any is None else ignored_any | ignored
            null = status != losses.OK
        arrays.append(arrow.from_numpy(out, null))
        names.append(loss)
        if summary is not None:
            summary.add_losses(loss, out, class_labels(label) if loss == "cce" else None)
    if summary is not None:
        summary.rows += len(batch)
        if bad_any is not None:
            summary.invalid += int(np.count_nonzero(bad_any))
            summary.ignored += int(np.count_nonzero(ignored_any & ~bad_any)) if ignored_any.any() else 0
    return pa.RecordBatch.from_arrays(arrays, names=names)


def class_labels(label) -> np.ndarray | None:
    """Index labels as int64 (-1 where null) for the summary's per-class CCE sums, or None
    when the targets are not one index per row."""
    if isinstance(label, pa.Array) and pa.types.is_integer(label.type):
        return arrow.to_numpy(label if label.type == pa.int64() else label.cast(pa.int64(), safe=False), fill=-1)
    return None


BATCH_COUNT = "counted in the batch that stopped the run"


def relocate(e: InvalidInputError, cols: Columns, row_offset: int) -> InvalidInputError:
    """The API's error re-addressed to the user's column name and the global row number;
    its count of invalid rows is the batch's (``BATCH_COUNT``): a run stops at the first
    batch that has one, so later batches are never counted."""
    column = {"pred": cols.describe("pred"), "target": cols.describe("label")}.get(e.column, e.column)
    return e.moved(row_offset=row_offset, column=column, counted=BATCH_COUNT if e.n_invalid else None)


# ---- the local streaming engine ---------------------------------------------------------

DEFAULT_BATCH_BYTES = 8 << 20  # decoded bytes per batch when --batch-rows is not given
READAHEAD_BYTES = 96 << 20  # decoded input the reader may hold ahead of the kernels
_QUEUE_DEPTH = 2  # scored batches waiting for the writer (small: losses and kept columns)
_DONE = object()
_STOPPED = object()


DEFAULT_BATCH_ROWS = 65536  # when a file's row size is unknown
MAX_DEFAULT_BATCH_ROWS = 1 << 20


def _default_batch_rows(source, cols) -> int:
    """Rows per batch when ``--batch-rows`` is not given: about ``DEFAULT_BATCH_BYTES`` of
    decoded input, whatever the row width (one row of 128k float32 classes is 512 KB: 16
    rows a batch), at most ``MAX_DEFAULT_BATCH_ROWS``; ``DEFAULT_BATCH_ROWS`` when the
    file does not tell its row size."""
    per_row = source.bytes_per_row(cols.needed)
    if per_row <= 0:
        return DEFAULT_BATCH_ROWS
    return int(max(1, min(DEFAULT_BATCH_BYTES // per_row, MAX_DEFAULT_BATCH_ROWS)))


class _Stage(threading.Thread):
    """A daemon thread feeding (or draining) a bounded queue; an exception it raises is
    handed to the main thread through the queue (or ``error``)."""

    def __init__(self, target):
        super().__init__(daemon=True)
        self._target_fn = target
        self.error = None
        self.stop = threading.Event()

    def run(self):
        try:
            self._target_fn(self)
        except BaseException as exc:  # handed over, re-raised in the main thread
            self.error = exc


class _Budget:
    """Bytes of decoded input in flight between the reader and the kernels. The reader waits
    while the budget is spent (one batch always passes), so it runs ahead of the kernels,
    through the start-up (imports, loading the compiled kernels) too, by a bounded amount."""

    def __init__(self, limit: int):
        self.limit = limit
        self.used = 0
        self._cond = threading.Condition()

    def acquire(self, n: int, stage: _Stage) -> bool:
        with self._cond:
            while self.used and self.used + n > self.limit:
                if stage.stop.is_set():
                    return False
                self._cond.wait(0.1)
            self.used += n
            return True

    def release(self, n: int) -> None:
        with self._cond:
            self.used -= n
            self._cond.notify()

    def wake(self) -> None:
        """Wake a waiting reader at once (to see its stop flag)."""
        with self._cond:
            self._cond.notify_all()


class _DeferredSummary:
    """Takes one batch's summary updates from ``score_batch`` and replays them later, in
    the writer thread: the summary's NumPy work overlaps the next batch's kernels. Replayed
    in batch order, the result is the same ``Summary``."""

    def __init__(self):
        self.rows = self.invalid = self.ignored = 0
        self._calls = []

    def add_losses(self, name, values, labels=None) -> None:
        self._calls.append(("add_losses", name, values, labels))

    def apply(self, summary: Summary) -> None:
        summary.rows += self.rows
        summary.invalid += self.invalid
        summary.ignored += self.ignored
        for method, *args in self._calls:
            getattr(summary, method)(*args)


def score_files(
    inputs,
    output: str,
    opts: ScoreOptions,
    *,
    fmt: str | None = None,
    batch_rows: int | None = None,
    threads: int | None = None,
    overwrite: bool = False,
    on_progress=None,
    on_start=None,
    on_warning=None,
    on_columns=None,
    storage_options: dict | None = None,
) -> Summary:
    """Score Parquet / Arrow IPC files into one output file, streaming with bounded memory.

    Three stages overlap: a reader thread decodes the next batch (only the needed columns),
    the calling thread runs the kernels (which release the GIL), a writer thread encodes
    the previous result into a temporary file beside ``output``, renamed into place only
    when every row was scored. Rows come out in input order, one per input row.
    ``on_columns(columns)`` (once, with the resolved ``Columns``, before any work),
    ``on_start(total_rows)``, ``on_progress(rows_done)`` and ``on_warning(text)`` report to
    the caller (the CLI prints the run header and draws the progress bar). Returns the run's
    ``Summary``.
    Inputs and ``output`` may be URLs (``s3://...``, see ``storage``), reached with
    ``storage_options`` (e.g. ``{"endpoint_override": ..., "region": ...}``).
    """
    import numba

    if threads is not None and threads < 1:
        raise InvalidInputError(f"--threads must be >= 1, got {threads}")
    # more threads than cores only slows the run: a huge --threads is taken as "all cores"
    cores = max(1, min(int(threads or numba.config.NUMBA_NUM_THREADS), numba.config.NUMBA_NUM_THREADS))
    if threads:
        pa.set_cpu_count(max(1, min(int(threads), os.cpu_count() or 1)))
    # ``set_num_threads`` (in ``_score_files``) is per calling thread; the caller's setting
    # is restored after.
    caller_threads = numba.get_num_threads()
    try:
        return _score_files(inputs, output, opts, fmt, batch_rows, overwrite, on_progress, on_start, on_warning,
                            storage_options, cores, on_columns)
    finally:
        numba.set_num_threads(caller_threads)


def kernel_threads(sources, cores: int) -> int:
    """Kernel threads for a run on ``cores``: when a source must be decoded (Parquet,
    compressed or remote Arrow IPC) decoding keeps at least one core busy (a local Parquet
    file's row groups are decoded on one thread per core, ``rowgroups.ordered_batches``)
    and the kernels take the others (a kernel thread that preempts the decoders costs the
    run more than it gives); memory-mapped uncompressed Arrow IPC
    decodes nothing, so the kernels take every core."""
    return cores if all(s.zero_copy() for s in sources) else max(1, cores - 1)


MAX_BATCH_ROWS = 1 << 24  # a larger --batch-rows is taken as this (memory stays bounded)
_BATCH_OVERHEAD = 16 << 10  # bytes charged per batch on top of its data: tiny batches are not free


def _score_files(inputs, output, opts, fmt, batch_rows, overwrite, on_progress, on_start, on_warning,
                 storage_options=None, cores=1, on_columns=None) -> Summary:
    import numba

    if batch_rows is not None:
        if batch_rows < 1:
            raise InvalidInputError(f"--batch-rows must be >= 1, got {batch_rows}")
        batch_rows = min(int(batch_rows), MAX_BATCH_ROWS)
    fmt = io.output_format(str(output), fmt)
    files = io.expand_inputs(inputs, storage_options=storage_options)
    io.check_output(output, files, given=inputs, overwrite=overwrite)
    sources = io.plan_sources(files)  # footers read, files closed again
    cols, schema = plan_inputs(io.distinct_schemas(sources), opts)
    if on_columns:
        on_columns(cols)
    for note in opts.notes() if on_warning else ():
        on_warning(note)
    numba.set_num_threads(kernel_threads(sources, cores))
    if fmt == "csv":
        bad = io.csv_unwritable(pa.schema([schema.field(k) for k in cols.keep]))
        if bad:
            raise InvalidInputError(
                f"--keep column {bad!r} is {schema.field(bad).type}, which CSV cannot hold; write "
                "Parquet, Arrow or JSON Lines, or do not keep it",
                column=bad,
            )
    if on_start:
        on_start(sum(s.num_rows for s in sources))
    with io.deferred_signals():  # a signal now is raised below, inside the ``try``
        writer = io.AtomicWriter(str(output), fmt, overwrite, storage_options, inputs=files)
    try:
        io.check_interrupted()
        return _stream(sources, cols, schema, writer, opts, batch_rows, on_progress, on_warning, cores)
    except BaseException:
        writer.abort()
        raise


def _stream(sources, cols, schema, writer, opts, batch_rows, on_progress, on_warning, decoders=1) -> Summary:
    """Read, score and write every batch through ``writer``, then commit it. On any error
    or signal every stage is told to stop and joined (each one polls its stop flag, so
    none is waited on for long) before the exception goes on. A local Parquet file's
    row groups are decoded by ``decoders`` threads (one per core), handed on in file order."""
    summary = Summary()
    # where a file is decoded by several threads, io.DECODE_AHEAD (32 MB) more is held by
    # those decoding later row groups: the queue then takes half, so that on 20M rows x 16
    # logits peak RSS stays under 512 MB, which the queue's full budget could pass
    parallel = any(s.decoder_threads(decoders) > 1 for s in sources)
    budget = _Budget(READAHEAD_BYTES // 2 if parallel else READAHEAD_BYTES)
    to_score: queue.Queue = queue.Queue()  # bounded by ``budget``
    to_write: queue.Queue = queue.Queue(_QUEUE_DEPTH)

    def read(stage):
        offset = 0
        for src in sources:
            with src.reading():  # one file open at a time, from its first batch to its last
                rows = batch_rows or _default_batch_rows(src, cols)
                for batch in src.batches(cols.needed, rows, decoders):
                    if stage.stop.is_set():
                        return
                    batch = conform(batch, schema)
                    size = batch.nbytes + _BATCH_OVERHEAD
                    if not budget.acquire(size, stage):
                        return
                    to_score.put((src, offset, batch, size))
                    offset += batch.num_rows
        to_score.put(_DONE)

    def write(stage):
        while True:
            item = _take(to_write, stage)
            if item is _DONE or item is _STOPPED:
                return
            scored, part = item
            writer.write(scored)
            part.apply(summary)
            written.n += scored.num_rows
            if on_progress:
                on_progress(written.n)

    written = _Counter()
    reader, writer_thread = _Stage(read), _Stage(write)
    reader.start()
    writer_thread.start()
    # On a GPU two batches are in flight, each scored by its own thread on its own CUDA
    # stream (``gpu.run`` keeps pinned buffers and a stream per thread), so one batch's
    # copy-in, kernel and copy-out overlap the next one's. On the CPU one at a time: the
    # kernels already use the cores.
    on_gpu = opts.device == "cuda" or (opts.device == "auto" and backend.cuda_usable())
    depth = 2 if on_gpu else 1
    pool = ThreadPoolExecutor(depth, thread_name_prefix="xent-gpu") if on_gpu else None
    submit = pool.submit if pool else _now
    in_flight: deque = deque()
    out_schema = None

    total_rows = sum(s.num_rows for s in sources)

    def finish():
        future, src, size, part, whole = in_flight.popleft()
        try:
            scored = future.result()
        except InvalidInputError as e:
            e = e.moved(source=src.path)
            raise (e.counted_in_full() if whole else e) from None  # one batch of every row: the total
        budget.release(size)
        _put_checked(to_write, (scored, part), writer_thread)
        return scored.schema

    try:
        first = True
        while True:
            item = _get(to_score, reader)
            if item is _DONE:
                break
            src, offset, batch, size = item
            del item
            if first and on_warning:
                from ..analysis.advise import first_batch_warning

                msg = first_batch_warning(batch, cols, opts)
                if msg:
                    on_warning(msg)
            first = False
            part = _DeferredSummary()
            whole = offset == 0 and batch.num_rows == total_rows
            in_flight.append((submit(score_batch, batch, opts, cols, row_offset=offset, summary=part), src, size, part,
                              whole))
            del batch
            if len(in_flight) == depth:
                out_schema = finish()
        while in_flight:
            out_schema = finish()
        _put_checked(to_write, _DONE, writer_thread)
        while writer_thread.is_alive():  # polled: a signal is not held up by the join
            writer_thread.join(0.1)
        if writer_thread.error:
            raise writer_thread.error
        if out_schema is None:  # no rows at all: an empty file with the output columns
            out_schema = score_batch(schema.empty_table(), opts, cols).schema
        writer.commit(out_schema)
    except BaseException:
        with io.deferred_signals():
            reader.stop.set()
            writer_thread.stop.set()
            budget.wake()
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)
            writer_thread.join(timeout=5)  # it polls its stop flag: returns after its current write
        raise
    finally:
        if pool is not None:
            pool.shutdown()
    return summary


class _Counter:
    n = 0


def _now(fn, *args, **kwargs) -> Future:
    """``fn`` called here and now, its result (or exception) held like a pool's future."""
    future = Future()
    try:
        future.set_result(fn(*args, **kwargs))
    except Exception as exc:
        future.set_exception(exc)
    return future


def _get(q: queue.Queue, stage: _Stage):
    """Next item from a producer stage, re-raising its exception in this thread."""
    while True:
        try:
            return q.get(timeout=0.1)
        except queue.Empty:
            pass
        if stage.error is not None:
            raise stage.error
        if not stage.is_alive() and q.empty():
            raise RuntimeError("the reader stopped without finishing")


def _take(q: queue.Queue, stage: _Stage):
    """Next item for a consumer stage, or ``_STOPPED`` once its stop flag is set."""
    while not stage.stop.is_set():
        try:
            return q.get(timeout=0.05)
        except queue.Empty:
            pass
    return _STOPPED


def _put_checked(q: queue.Queue, item, stage: _Stage) -> None:
    """Hand ``item`` to a consumer stage, re-raising its exception if it died."""
    while True:
        if stage.error is not None:
            raise stage.error
        try:
            q.put(item, timeout=0.1)
            return
        except queue.Full:
            continue
