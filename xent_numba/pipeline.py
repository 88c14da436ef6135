"""Score tables batch by batch: Arrow record batch in -> kept columns + losses out.

``score_batch`` is the unit every engine shares (the local streaming engine and the Dask
engine call it per batch / partition); it never drops or reorders rows.
"""

from __future__ import annotations

import fnmatch
import math
import queue
import threading
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from . import api, arrow, backend, io, losses
from .errors import InvalidInputError
from .summary import Summary

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
    device: str = "cpu"
    on_invalid: str = "error"
    normalize: bool = False  # CCE from probabilities: rows divided by their sums (Keras)

    def __post_init__(self):
        if self.loss not in LOSS_CHOICES:
            raise InvalidInputError(f"--loss must be one of {', '.join(LOSS_CHOICES)}; got {self.loss!r}")
        if self.on_invalid not in ON_INVALID_CHOICES:
            raise InvalidInputError(f"--on-invalid must be 'error' or 'null'; got {self.on_invalid!r}")
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
        else:
            kw.update(pos_weight=self.pos_weight, reduce=self.bce_reduce)
        return kw


@dataclass(frozen=True)
class Columns:
    """Input columns resolved against a schema: ``pred``/``label`` are lists of names (more
    than one name: the "wide" layout, one scalar column per class, in column order)."""

    pred: tuple[str, ...]
    label: tuple[str, ...]
    keep: tuple[str, ...]

    @property
    def needed(self) -> list[str]:
        seen = dict.fromkeys(self.keep + self.pred + self.label)
        return list(seen)

    def describe(self, role: str) -> str:
        names = self.pred if role == "pred" else self.label
        return names[0] if len(names) == 1 else f"{names[0]}..{names[-1]}"


def _match(pattern: str, names: list[str], what: str) -> tuple[str, ...]:
    if pattern in names:
        return (pattern,)
    if any(ch in pattern for ch in "*?["):
        hits = tuple(n for n in names if fnmatch.fnmatchcase(n, pattern))
        if hits:
            return hits
    raise InvalidInputError(
        f"{what} column {pattern!r} not found; columns are: {', '.join(names)}", column=pattern
    )


def resolve_columns(schema: pa.Schema, opts: ScoreOptions) -> Columns:
    names = list(schema.names)
    pred = _match(opts.pred, names, "prediction")
    label = _match(opts.label, names, "label")
    keep = tuple(_match(k, names, "--keep")[0] for k in opts.keep)
    for role, cols in (("prediction", pred), ("label", label)):
        if len(cols) > 1:
            bad = [c for c in cols if not _is_number(schema.field(c).type)]
            if bad:
                raise InvalidInputError(
                    f"wide {role} columns must be numeric scalars; {bad[0]!r} is {schema.field(bad[0]).type}",
                    column=bad[0],
                )
    return Columns(pred, label, keep)


def _is_number(t) -> bool:
    return pa.types.is_floating(t) or pa.types.is_integer(t) or pa.types.is_boolean(t)


def _column(batch, names: tuple[str, ...]):
    """One column as is, or several scalar columns as a FixedSizeListArray (nulls kept)."""
    if len(names) == 1:
        return batch.column(names[0])
    cols = [batch.column(n) for n in names]
    common = pa.float64() if any(pa.types.is_floating(c.type) for c in cols) else pa.int64()
    if all(c.type == cols[0].type for c in cols):
        common = cols[0].type
    n, k = len(batch), len(cols)
    values = np.empty((n, k), dtype=common.to_pandas_dtype())
    mask = None
    for j, c in enumerate(cols):
        c = c.cast(common) if c.type != common else c
        if c.null_count:
            mask = np.zeros((n, k), dtype=bool) if mask is None else mask
            mask[:, j] = arrow.to_numpy(c.is_null())
        values[:, j] = arrow.to_numpy(c)
    flat = arrow.from_numpy(values.reshape(-1), None if mask is None else mask.reshape(-1))
    return pa.FixedSizeListArray.from_arrays(flat, k)


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
    bad_any = np.zeros(len(batch), dtype=bool)
    ignored_any = np.zeros(len(batch), dtype=bool)
    on_invalid = "error" if opts.on_invalid == "error" else "nan"
    for loss in opts.losses:
        try:
            out, status = api.score(loss, pred, label, on_invalid=on_invalid, **opts.kernel_kwargs(loss))
        except InvalidInputError as e:
            raise relocate(e, cols, row_offset) from None
        bad = status > losses.IGNORED
        bad_any |= bad
        ignored_any |= status == losses.IGNORED
        null = status != losses.OK
        arrays.append(arrow.from_numpy(out, null))
        names.append(loss)
        if summary is not None:
            summary.add_losses(loss, out)
            if loss == "cce" and isinstance(label, (pa.Array,)) and pa.types.is_integer(label.type):
                summary.add_classes(arrow.to_numpy(label.cast(pa.int64(), safe=False), fill=-1), out)
    if summary is not None:
        summary.rows += len(batch)
        summary.invalid += int(bad_any.sum())
        summary.ignored += int((ignored_any & ~bad_any).sum())
    return pa.RecordBatch.from_arrays(arrays, names=names)


def relocate(e: InvalidInputError, cols: Columns, row_offset: int) -> InvalidInputError:
    """The API's error re-addressed to the user's column name and the global row number."""
    column = {"pred": cols.describe("pred"), "target": cols.describe("label")}.get(e.column, e.column)
    return e.moved(row_offset=row_offset, column=column)


# ---- the local streaming engine ---------------------------------------------------------

DEFAULT_BATCH_BYTES = 8 << 20  # decoded bytes per batch when --batch-rows is not given
READAHEAD_BYTES = 96 << 20  # decoded input the reader may hold ahead of the kernels
_QUEUE_DEPTH = 2  # scored batches waiting for the writer (small: losses and kept columns)
_DONE = object()


def _default_batch_rows(source, cols) -> int:
    per_row = source.bytes_per_row(cols.needed)
    if per_row <= 0:
        return 65536
    return int(min(max(DEFAULT_BATCH_BYTES / per_row, 1024), 1 << 20))


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


class _DeferredSummary:
    """Takes one batch's summary updates from ``score_batch`` and replays them later, in
    the writer thread: the summary's NumPy work overlaps the next batch's kernels. Replayed
    in batch order, the result is the same ``Summary``."""

    def __init__(self):
        self.rows = self.invalid = self.ignored = 0
        self._calls = []

    def add_losses(self, name, values) -> None:
        self._calls.append(("add_losses", name, values))

    def add_classes(self, labels, cce) -> None:
        self._calls.append(("add_classes", labels, cce))

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
) -> Summary:
    """Score Parquet / Arrow IPC files into one output file, streaming with bounded memory.

    Three stages overlap: a reader thread decodes the next batch (only the needed columns),
    the calling thread runs the kernels (which release the GIL), a writer thread encodes
    the previous result into a temporary file beside ``output``, renamed into place only
    when every row was scored. Rows come out in input order, one per input row.
    ``on_start(total_rows)``, ``on_progress(rows_done)`` and ``on_warning(text)`` report to
    the caller (the CLI draws the progress bar). Returns the run's ``Summary``.
    """
    import numba

    cores = max(1, min(int(threads or numba.config.NUMBA_NUM_THREADS), numba.config.NUMBA_NUM_THREADS))
    if threads:
        pa.set_cpu_count(max(1, int(threads)))
    # The reader thread keeps one core busy decoding: kernels take the others (on two cores,
    # one kernel thread finishes the run sooner than two that preempt the decoder).
    # ``set_num_threads`` is per calling thread; the caller's setting is restored after.
    caller_threads = numba.get_num_threads()
    numba.set_num_threads(max(1, cores - 1))
    try:
        return _score_files(inputs, output, opts, fmt, batch_rows, overwrite, on_progress, on_start, on_warning)
    finally:
        numba.set_num_threads(caller_threads)


def _score_files(inputs, output, opts, fmt, batch_rows, overwrite, on_progress, on_start, on_warning) -> Summary:
    if batch_rows is not None and batch_rows < 1:
        raise InvalidInputError(f"--batch-rows must be >= 1, got {batch_rows}")
    fmt = io.output_format(str(output), fmt)
    sources = [io.Source(p) for p in io.expand_inputs(inputs)]
    plans = []
    for src in sources:
        try:
            plans.append(resolve_columns(src.schema, opts))
        except InvalidInputError as e:
            raise e.moved(source=src.path) from None
    cols = plans[0]
    for src, c in zip(sources, plans, strict=True):
        if c != cols:
            raise InvalidInputError(
                f"its columns differ from {sources[0].path}'s ({', '.join(c.pred)} vs {', '.join(cols.pred)})",
                source=src.path,
            )
    if on_start:
        on_start(sum(s.num_rows for s in sources))
    writer = io.AtomicWriter(str(output), fmt, overwrite)
    summary = Summary()
    budget = _Budget(READAHEAD_BYTES)
    to_score: queue.Queue = queue.Queue()  # bounded by ``budget``
    to_write: queue.Queue = queue.Queue(_QUEUE_DEPTH)

    def read(stage):
        offset = 0
        for src in sources:
            rows = batch_rows or _default_batch_rows(src, cols)
            for batch in src.batches(cols.needed, rows):
                size = batch.nbytes
                if not budget.acquire(size, stage):
                    return
                to_score.put((src, offset, batch, size))
                offset += batch.num_rows
        to_score.put(_DONE)

    def write(stage):
        while True:
            item = to_write.get()
            if item is _DONE:
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

    def finish():
        future, src, size, part = in_flight.popleft()
        try:
            scored = future.result()
        except InvalidInputError as e:
            raise e.moved(source=src.path) from None
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
                from .advise import first_batch_warning

                msg = first_batch_warning(batch, cols, opts)
                if msg:
                    on_warning(msg)
            first = False
            part = _DeferredSummary()
            in_flight.append((submit(score_batch, batch, opts, cols, row_offset=offset, summary=part), src, size, part))
            del batch
            if len(in_flight) == depth:
                out_schema = finish()
        while in_flight:
            out_schema = finish()
        _put_checked(to_write, _DONE, writer_thread)
        writer_thread.join()
        if writer_thread.error:
            raise writer_thread.error
        if out_schema is None:  # no rows at all: an empty file with the output columns
            empty = pa.schema([sources[0].schema.field(c) for c in cols.needed]).empty_table()
            out_schema = score_batch(empty, opts, cols).schema
        writer.commit(out_schema)
        if pool is not None:
            pool.shutdown()
    except BaseException:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        reader.stop.set()
        writer_thread.stop.set()
        _drain(to_write)
        writer_thread.join(timeout=5)
        writer.abort()
        raise
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


def _drain(q: queue.Queue) -> None:
    while True:
        try:
            q.get_nowait()
        except queue.Empty:
            return
