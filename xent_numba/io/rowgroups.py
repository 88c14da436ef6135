"""Parquet row groups decoded on several threads, handed out in file order.

One decoder thread caps a run at its decode rate (decoding list columns costs more than
scoring them) while the cores beside it idle. ``ordered_batches`` gives each of
``workers`` threads its own ``ParquetFile`` and every ``workers``-th row group; the caller
receives the batches in file order, so rows in = rows out, in order, whatever the thread
count (each row group's batches are what a single reader would cut from it).

Memory stays bounded: the thread decoding the row group the caller is reading keeps at most
``_CURRENT_DEPTH`` batches waiting; the threads decoding later row groups together hold at
most ``ahead_bytes`` (and always one batch, so the run makes progress whatever the batch
size). A thread that fails hands its exception to the caller; closing the generator (the
caller's error, a signal, or an early stop) stops and joins every thread.
"""

from __future__ import annotations

import threading
from collections import deque

import pyarrow.parquet as pq

_CURRENT_DEPTH = 2  # batches of the row group being read that may wait for the caller


class _State:
    def __init__(self, n_groups: int):
        self.cond = threading.Condition()
        self.current = 0  # the row group the caller reads now
        self.queues = [deque() for _ in range(n_groups)]
        self.finished = [False] * n_groups
        self.ahead = 0  # bytes held by row groups after ``current``
        self.error: BaseException | None = None
        self.stop = False


def ordered_batches(open_file, n_groups: int, columns, batch_rows: int, workers: int, ahead_bytes: int):
    """Batches of ``columns`` (at most ``batch_rows`` rows each) from row groups
    ``0..n_groups-1`` in order, decoded by ``workers`` threads, each reading through its own
    ``open_file()`` (a ``pyarrow.parquet.ParquetFile``)."""
    st = _State(n_groups)

    def work(first: int) -> None:
        try:
            pf: pq.ParquetFile = open_file()
            for g in range(first, n_groups, workers):
                for batch in pf.iter_batches(batch_size=batch_rows, row_groups=[g], columns=columns, use_threads=False):
                    size = batch.nbytes
                    with st.cond:
                        while not st.stop and (
                            len(st.queues[g]) >= _CURRENT_DEPTH if g == st.current
                            else st.ahead > 0 and st.ahead + size > ahead_bytes
                        ):
                            st.cond.wait()
                        if st.stop:
                            return
                        st.queues[g].append((batch, size))
                        if g != st.current:
                            st.ahead += size
                        st.cond.notify_all()
                with st.cond:
                    st.finished[g] = True
                    st.cond.notify_all()
        except BaseException as exc:  # handed to the caller, who raises it
            with st.cond:
                st.error = st.error or exc
                st.cond.notify_all()

    threads = [threading.Thread(target=work, args=(k,), daemon=True, name=f"xent-decode-{k}")
               for k in range(min(workers, n_groups))]
    for t in threads:
        t.start()
    try:
        for g in range(n_groups):
            while True:
                with st.cond:
                    while not st.queues[g] and not st.finished[g] and st.error is None:
                        st.cond.wait()
                    if st.error is not None:
                        raise st.error
                    if not st.queues[g]:  # finished and drained: the next row group
                        st.current = g + 1
                        if g + 1 < n_groups:  # its bytes no longer count as ahead
                            st.ahead -= sum(size for _, size in st.queues[g + 1])
                        st.cond.notify_all()
                        break
                    batch, _ = st.queues[g].popleft()
                    st.cond.notify_all()
                yield batch
    finally:
        with st.cond:
            st.stop = True
            st.cond.notify_all()
        for t in threads:
            t.join()
