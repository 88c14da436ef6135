"""Score Parquet datasets on a Dask cluster (``xent score --engine dask``).

The data is read with ``dask.dataframe.read_parquet`` (only the needed columns, one
partition per row group), every partition is scored by ``pipeline.score_batch`` (the same
kernels and checks as the local engine) through ``map_partitions``, and each partition
writes one part file of a Parquet dataset. Partition summaries (exact counts and sums,
mergeable log-binned quantile sketches, see ``xent_numba.analysis.summary``) are merged on the client.

The output directory is written under a temporary name beside the target (in a folder that
must exist: nothing else is created) and renamed only when every partition succeeded; on
any error or signal it is removed. ``--overwrite`` replaces only a directory that holds
nothing but part files (``io.check_output``).
"""

from __future__ import annotations

import os
import pickle
import shutil
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from .. import io
from ..analysis.summary import Summary
from ..errors import InvalidInputError
from ..io import storage
from .local import ScoreOptions, conform, plan_inputs, resolve_columns, score_batch

_SUMMARY_META = pd.DataFrame({"rows": pd.Series([], dtype="int64"), "summary": pd.Series([], dtype=object)})


def _import_dask():
    try:
        import dask.dataframe as dd
        import distributed
    except ImportError:
        raise InvalidInputError(
            "--engine dask needs Dask: pip install 'xent-numba[dask]'"
        ) from None
    return dd, distributed


# ---- Python API ---------------------------------------------------------------------------


def score(ddf, loss: str = "cce", *, pred="pred", label="label", keep=(), **options):
    """Score a Dask DataFrame lazily: ``-> dask.dataframe.DataFrame`` of the kept columns
    followed by ``cce`` and/or ``bce`` (one row per input row, partitions preserved).

    ``options`` are those of ``xent score`` / ``pipeline.ScoreOptions``: ``from_logits``,
    ``log_base``, ``eps``, ``label_smoothing``, ``class_weight``, ``pos_weight``,
    ``ignore_index``, ``bce_reduce``, ``device``, ``on_invalid`` ("error" or "null").
    Errors name the partition and the row within it.

    >>> scored = xent_numba.dask.score(dd.read_parquet("dump/"), loss="both", keep=["id"])
    """
    _import_dask()
    opts = ScoreOptions(loss=loss, pred=pred, label=label, keep=tuple(keep), **options)
    meta_table = _arrow(ddf._meta)
    cols = resolve_columns(meta_table.schema, opts)
    out_type = _result_type(ddf._meta, cols)
    meta = pd.DataFrame({k: ddf._meta[k] for k in cols.keep})
    for name in opts.losses:
        meta[name] = pd.Series([], dtype=pd.ArrowDtype(out_type))
    return ddf.map_partitions(_score_frame, opts, cols, out_type, meta=meta, align_dataframes=False)


def _result_type(meta: pd.DataFrame, cols) -> pa.DataType:
    dtype = meta[cols.pred[0]].dtype
    if isinstance(dtype, pd.ArrowDtype):
        t = dtype.pyarrow_dtype
        while pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
            t = t.value_type
        if t == pa.float64():
            return pa.float64()
        if pa.types.is_floating(t):
            return pa.float32()
    return pa.float32() if dtype == np.float32 else pa.float64()


def _arrow(df: pd.DataFrame) -> pa.Table:
    return pa.Table.from_pandas(df, preserve_index=False)


def _score_frame(df, opts, cols, out_type, partition_info=None):
    part = partition_info["number"] if partition_info else None
    try:
        batch = score_batch(_arrow(df), opts, cols)
    except InvalidInputError as e:
        raise e.moved(source=f"partition {part}" if part is not None else None) from None
    table = pa.Table.from_batches([batch])
    table = table.cast(pa.schema([f if f.name not in opts.losses else pa.field(f.name, out_type) for f in table.schema]))
    out = table.to_pandas(types_mapper=pd.ArrowDtype)
    out.index = df.index
    return out


# ---- the CLI engine ---------------------------------------------------------------------


def _parquet_only(files) -> None:
    """Refuse, before any work, an input the Dask engine cannot read (it reads Parquet
    only): never a file silently left out of a run."""
    for f in files:
        if str(f).lower().endswith(io.IPC_EXT):
            raise InvalidInputError(
                "is Arrow IPC/Feather, which --engine dask does not read; score it with "
                "--engine local (or convert it to Parquet)", source=str(f))


def _plan(files, opts):
    """``[(file, global_row_offset)]`` per row group, from the Parquet footers (each file
    opened and closed in turn); the columns and the one schema every partition is cast to
    (``pipeline.plan_inputs``, once per distinct schema); the row count."""
    plan, offset, schemas = [], 0, {}
    for f in files:
        try:
            with (storage.open_input(f) if isinstance(f, storage.Location) else pa.OSFile(str(f))) as handle:
                meta = pq.ParquetFile(handle).metadata
            schema = meta.schema.to_arrow_schema().remove_metadata()
            schemas.setdefault(schema.serialize().to_pybytes(), (str(f), schema))
        except InvalidInputError:
            raise
        except Exception as exc:  # corrupt, truncated or not Parquet
            raise InvalidInputError(f"cannot read Parquet ({exc})", source=str(f)) from None
        for rg in range(meta.num_row_groups):
            plan.append((str(f), offset))
            offset += meta.row_group(rg).num_rows
    cols, schema = plan_inputs(list(schemas.values()), opts)
    return plan, cols, schema, offset


def _identities(files) -> list:
    """Each local input's identity (``io.file_identity``), to tell one that changed during the run."""
    out = []
    for f in files:
        try:
            out.append(None if isinstance(f, storage.Location) else io.file_identity(os.stat(f)))
        except OSError:
            out.append(None)
    return out


def _check_unchanged(files, before) -> None:
    """Refuse a run whose local input changed (rewritten, truncated, replaced) between its
    planning and its end: the partitions may have read a mix of old and new."""
    for f, was in zip(files, before, strict=True):
        if was is not None and _identities([f])[0] != was:
            raise InvalidInputError(io.CHANGED, source=str(f))


def _score_and_write(df, opts, cols, schema, plan, tmpdir, threads, partition_info=None):
    """Score one partition, write its part file, return a one-row frame with its summary."""
    import numba

    if threads:
        numba.set_num_threads(max(1, min(threads, numba.config.NUMBA_NUM_THREADS)))
    number = partition_info["number"] if partition_info else 0
    source, offset = plan[number] if number < len(plan) else (None, 0)
    summary = Summary()
    try:
        table = conform(_arrow(df).select(list(schema.names)), schema)
        batch = score_batch(table, opts, cols, row_offset=offset, summary=summary)
    except InvalidInputError as e:
        raise e.moved(source=source) from None
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as exc:
        raise InvalidInputError(f"cannot read this partition as the dataset's schema ({exc})", source=source) from None
    _write_part(pa.Table.from_batches([batch]), tmpdir, f"part.{number:05d}.parquet")
    return pd.DataFrame({"rows": [len(df)], "summary": [pickle.dumps(summary)]})


def _write_part(table: pa.Table, tmpdir, name: str) -> None:
    """A part file into the temporary folder: a local path, or a prefix in a store."""
    if isinstance(tmpdir, storage.Location):
        pq.write_table(table, f"{tmpdir.path}/{name}", filesystem=tmpdir.fs)
    else:
        pq.write_table(table, os.path.join(tmpdir, name))


def _cluster(scheduler, workers, distributed):
    if scheduler:
        return distributed.Client(scheduler), None
    if workers:  # what the user asked for: worker processes, one thread each
        cluster = _local_cluster(distributed, n_workers=workers, threads_per_worker=1, processes=True)
    else:
        # One in-process worker with a thread per core. The kernels and the Parquet decoder
        # release the GIL, so threads use every core; worker processes would add their
        # start-up and pickling of every partition between processes, for no gain on one
        # machine.
        cluster = _local_cluster(distributed, n_workers=1, threads_per_worker=os.cpu_count() or 1, processes=False)
    return distributed.Client(cluster), cluster


def _local_cluster(distributed, **kwargs):
    # The scheduler's HTTP endpoints move off port 8787 when another cluster holds it: a
    # UserWarning that says nothing about this run.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"Port \d+ is already in use")
        return distributed.LocalCluster(dashboard_address=None, silence_logs=50, **kwargs)


def score_files(
    inputs,
    output,
    opts: ScoreOptions,
    *,
    fmt: str | None = None,
    scheduler: str | None = None,
    workers: int | None = None,
    overwrite: bool = False,
    on_progress=None,
    on_start=None,
    on_columns=None,
    storage_options: dict | None = None,
    **_ignored,
) -> Summary:
    """Score Parquet files into the Parquet dataset directory ``output`` on a Dask cluster.

    Without ``scheduler`` an embedded ``LocalCluster`` is started and shut down: one
    in-process worker with a thread per core, or ``workers`` single-threaded processes.
    With ``scheduler="tcp://host:port"`` an existing cluster is used (its workers need
    xent-numba installed and must see the input and output paths). Inputs and ``output``
    may be URLs (``s3://...``; the inputs in one store), read and written on every worker
    through the same pyarrow filesystem (``storage_options`` travel with it).
    ``on_columns(columns)`` is called once with the resolved ``Columns`` before any work.
    """
    dd, distributed = _import_dask()
    if fmt not in (None, "parquet"):
        raise InvalidInputError("--engine dask writes a Parquet dataset directory; use --format parquet")
    out = Path(output)
    files = io.expand_inputs(inputs, storage_options=storage_options)  # what the local engine reads
    _parquet_only(files)
    if storage.is_url(storage.local_path(str(output))):
        return _score_to_url(dd, distributed, files, str(output), opts, scheduler, workers, overwrite,
                             on_progress, on_start, storage_options, on_columns)
    io.check_output(output, files, given=inputs, overwrite=overwrite, directory=True)
    if io.is_stdout(output) or io.is_special(output):
        raise InvalidInputError("--engine dask writes a Parquet dataset directory; OUTPUT must be a folder name")
    before = _identities(files)
    plan, cols, schema, total = _plan(files, opts)
    if on_columns:
        on_columns(cols)
    if on_start:
        on_start(total)
    # beside the target, in a folder that exists (check_output): nothing is created
    # outside the temporary folder before the run succeeds
    tmpdir = io.temp_name(out)
    try:
        with io.deferred_signals():  # a signal now is raised below, inside the ``try``
            tmpdir.mkdir()
    except OSError as exc:
        raise InvalidInputError(f"{output}: cannot create the output in {out.parent} ({exc.strerror or exc})") from None
    summary = Summary()
    try:
        io.check_interrupted()
        if total == 0:
            batch = score_batch(schema.empty_table(), opts, cols, summary=summary)
            pq.write_table(pa.Table.from_batches([batch]), tmpdir / "part.00000.parquet")
        else:
            summary = _run(dd, distributed, files, plan, cols, schema, opts, str(tmpdir), scheduler, workers, on_progress)
        _check_unchanged(files, before)
        with io.deferred_signals():
            io.check_interrupted()
            _commit(tmpdir, out, overwrite)
            io.output_in_place()
    except BaseException:
        with io.deferred_signals():
            shutil.rmtree(tmpdir, ignore_errors=True)
        raise
    return summary


def _score_to_url(dd, distributed, files, url, opts, scheduler, workers, overwrite, on_progress, on_start,
                  storage_options, on_columns=None) -> Summary:
    """``score_files`` into a dataset prefix in an object store (``storage.RemoteDataset``:
    parts under a temporary prefix, moved into place when every partition succeeded)."""
    target = storage.RemoteDataset(url, storage_options, overwrite, inputs=files)
    plan, cols, schema, total = _plan(files, opts)
    if on_columns:
        on_columns(cols)
    if on_start:
        on_start(total)
    tmp = storage.Location(url, target.fs, target.tmp)  # pickled to the workers with the store's options
    summary = Summary()
    try:
        io.check_interrupted()
        if total == 0:
            batch = score_batch(schema.empty_table(), opts, cols, summary=summary)
            _write_part(pa.Table.from_batches([batch]), tmp, "part.00000.parquet")
        else:
            summary = _run(dd, distributed, files, plan, cols, schema, opts, tmp, scheduler, workers, on_progress)
        with io.deferred_signals():
            io.check_interrupted()
            target.commit()
            io.output_in_place()
    except BaseException:
        with io.deferred_signals():
            target.abort()
        raise
    return summary


def _commit(tmpdir: Path, out: Path, overwrite: bool) -> None:
    """The finished dataset renamed into place. An old output (``--overwrite``; only one
    that ``io.check_output`` let through) is moved aside first and removed after, so it is
    kept if the rename fails."""
    if not (overwrite and os.path.lexists(out)):
        io.rename_into_place(tmpdir, out, overwrite=False)
        return
    old = io.temp_name(out)
    os.rename(out, old)
    try:
        io.rename_into_place(tmpdir, out, overwrite=False)
    except BaseException:
        os.rename(old, out)
        raise
    shutil.rmtree(old) if old.is_dir() else old.unlink()


def _remote(files):
    """``(paths, fsspec filesystem)`` for inputs in a store (None for local files): pyarrow's
    filesystem seen through fsspec, which Dask's Parquet reader takes."""
    locs = [f for f in files if isinstance(f, storage.Location)]
    if not locs:
        return files, None
    if len(locs) < len(files) or len({loc.key()[:2] for loc in locs}) > 1:
        raise InvalidInputError("--engine dask reads its inputs from one place: all local, or all in one store")
    from fsspec.implementations.arrow import ArrowFSWrapper

    return [loc.path for loc in locs], ArrowFSWrapper(locs[0].fs)


def _run(dd, distributed, files, plan, cols, schema, opts, tmpdir, scheduler, workers, on_progress):
    files, fs = _remote(files)
    ddf = dd.read_parquet(files, columns=cols.needed, split_row_groups=True, dtype_backend="pyarrow",
                          **({"filesystem": fs} if fs is not None else {}))
    if ddf.npartitions != len(plan):  # one partition per row group is what the plan assumes
        raise RuntimeError(f"expected {len(plan)} partitions, Dask made {ddf.npartitions}")
    client, cluster = _cluster(scheduler, workers, distributed)
    try:
        # kernel threads per task: the machine's cores shared by the tasks that run at once
        slots = sum(w.get("nthreads", 1) for w in client.scheduler_info().get("workers", {}).values())
        threads = max(1, (os.cpu_count() or 1) // max(slots, 1)) if cluster is not None else None
        parts = ddf.map_partitions(
            _score_and_write, opts, cols, schema, plan, tmpdir, threads, meta=_SUMMARY_META, align_dataframes=False
        )
        futures = client.compute(parts.to_delayed())
        summary = Summary()
        done = 0
        for fut in distributed.as_completed(futures):
            try:
                frame = fut.result()
            except Exception as exc:
                client.cancel(futures)
                if isinstance(exc, InvalidInputError):
                    raise
                i = futures.index(fut)
                raise InvalidInputError(f"cannot read or score this file ({exc})", source=plan[i][0]) from None
            for blob in frame["summary"]:
                summary.merge(pickle.loads(blob))
            done += int(frame["rows"].sum())
            if on_progress:
                on_progress(done)
        return summary
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
