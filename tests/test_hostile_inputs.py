"""Hostile inputs: what a run reads. Every file is generated here. The property, for every
layout of folders and files: the rows out are exactly the rows of the files a user means,
in order, or the run is a clear exit 2 naming the file, with no output left behind.

- hidden and bookkeeping folders (``_temporary/``, ``.ipynb_checkpoints/``) are skipped at
  every depth, by every engine and every filesystem, and by a glob's wildcards;
- both engines accept the same inputs, or refuse one by name before any work;
- links to folders are followed like links to files; a loop, or a file reached twice, is
  refused;
- many files: a run holds a few open at a time (a low ``ulimit -n`` is no obstacle);
- an input changed while it is read is exit 2 naming it, never SIGBUS;
- an Arrow IPC file's row width is estimated from its first record batch.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.feather as feather
import pyarrow.parquet as pq
import pytest

from tests.test_hostile import ROOT, leftovers, run
from xent_numba import io as xio
from xent_numba.engine import local as pipeline
from xent_numba.errors import InvalidInputError
from xent_numba.io import readers, storage

C = 3


def table(ids) -> pa.Table:
    """Rows ``ids`` (the ``id`` column tells which file and row each output row came from)."""
    ids = np.asarray(ids, dtype=np.int64)
    p = np.full((len(ids), C), 1 / C, dtype=np.float32)
    pred = pa.FixedSizeListArray.from_arrays(pa.array(p.ravel()), C)
    return pa.table({"id": ids, "pred": pred, "label": ids % C})


def write(path: Path, ids, kind=None, **kw) -> list[int]:
    """A data file of rows ``ids``: Parquet, or Arrow IPC for .arrow / .feather / .ipc."""
    path.parent.mkdir(parents=True, exist_ok=True)
    t = table(ids)
    if (kind or path.suffix) in (".arrow", ".feather", ".ipc", "arrow"):
        feather.write_feather(t, path, compression=kw.pop("compression", "uncompressed"), **kw)
    else:
        pq.write_table(t, path, **kw)
    return list(ids)


def ids_of(out: Path) -> list[int]:
    return pq.read_table(out).column("id").to_pylist()


def score(inputs, out: Path, engine="local", *extra):
    args = ["score", *map(str, inputs), "-o", out, "--keep", "id", "-q", *extra]
    if engine != "local":
        args += ["--engine", engine]
    return run(*args)


def xent_env(**extra):
    return dict(os.environ, PYTHONPATH=str(ROOT), **extra)


# ---- 1. hidden and bookkeeping folders --------------------------------------------------


def bookkeeping_tree(root: Path) -> list[int]:
    """A dump with Spark's, Jupyter's and others' folders at several depths (rows 900+ must
    never come out); returns the rows a user means, in order."""
    want = write(root / "a.parquet", range(0, 5))
    want += write(root / "sub" / "b.parquet", range(5, 9))
    want += write(root / "sub" / "deeper" / "c.parquet", range(9, 12))
    for i, hidden in enumerate([
        "_temporary/0/_temporary/attempt_1/part-0.parquet", ".ipynb_checkpoints/a-checkpoint.parquet",
        "sub/_tmp/b.parquet", "sub/deeper/.snapshot/c.parquet", "sub/.Trash-1000/files/x.parquet",
        "_SUCCESS/odd.parquet", ".git/x.parquet", "sub/_delta_log/00.parquet",
    ]):
        write(root / hidden, range(900 + 10 * i, 905 + 10 * i))
    (root / "_SUCCESS.parquet").write_bytes(b"")  # hidden file names were always skipped
    return want


def test_hidden_folders_are_skipped_at_every_depth(tmp_path):
    root = tmp_path / "dump"
    want = bookkeeping_tree(root)
    got = xio.expand_inputs([str(root)])
    assert got == [str(root / "a.parquet"), str(root / "sub/b.parquet"), str(root / "sub/deeper/c.parquet")]
    out = tmp_path / "o.parquet"
    res = score([root], out)
    assert res.exit_code == 0, res.output
    assert ids_of(out) == want


@pytest.mark.slow
def test_dask_skips_the_same_hidden_folders(tmp_path):
    pytest.importorskip("distributed")
    root = tmp_path / "dump"
    want = bookkeeping_tree(root)
    out = tmp_path / "scores"
    res = score([root], out, "dask")
    assert res.exit_code == 0, res.output
    assert ids_of(out) == want


def test_a_folder_named_by_the_user_is_read_even_if_hidden(tmp_path):
    root = tmp_path / "_staging"
    want = write(root / "a.parquet", range(3)) + write(root / "s" / "b.parquet", range(3, 6))
    write(root / "_temporary" / "x.parquet", range(900, 903))
    out = tmp_path / "o.parquet"
    assert score([root], out).exit_code == 0 and ids_of(out) == want
    named = root / "_temporary" / "x.parquet"  # a hidden file named outright is that file
    assert xio.expand_inputs([str(named)]) == [str(named)]


def test_glob_wildcards_never_match_hidden_names_literal_segments_do(tmp_path, monkeypatch):
    root = tmp_path / "d"
    bookkeeping_tree(root)
    write(root / "_data" / "x.parquet", range(100, 102))
    write(root / "_part-9.parquet", range(950, 952))
    monkeypatch.chdir(tmp_path)
    assert xio.expand_inputs(["d/*/*.parquet"]) == ["d/sub/b.parquet"]
    assert xio.expand_inputs(["d/*.parquet"]) == ["d/a.parquet"]
    assert xio.expand_inputs(["d/**/*.parquet"]) == ["d/a.parquet", "d/sub/b.parquet", "d/sub/deeper/c.parquet"]
    assert xio.expand_inputs(["d/*/deeper/*.parquet"]) == ["d/sub/deeper/c.parquet"]
    # spelled out by the user: taken as named
    assert xio.expand_inputs(["d/_data/*.parquet"]) == ["d/_data/x.parquet"]
    assert xio.expand_inputs(["d/sub/_tm?/*.parquet"]) == ["d/sub/_tmp/b.parquet"]
    assert xio.expand_inputs(["d/_*/x.parquet"]) == ["d/_data/x.parquet"]
    assert xio.expand_inputs([str(tmp_path / "d" / "**" / "c.parquet")]) == [str(root / "sub/deeper/c.parquet")]


def test_fsspec_and_object_store_globs_skip_hidden_segments_too():
    fsspec = pytest.importorskip("fsspec")
    mem = fsspec.filesystem("memory")
    buf = pa.BufferOutputStream()
    pq.write_table(table([1]), buf)
    base = f"hidden-{os.getpid()}-{time.monotonic_ns()}"
    for key in ["a.parquet", "_temporary/0/b.parquet", ".x/c.parquet", "s/e.parquet", "_s/f.parquet",
                "s/.ipynb_checkpoints/g.parquet"]:
        mem.pipe(f"/{base}/{key}", buf.getvalue().to_pybytes())
    names = lambda url, ext=(): [str(x).split(f"{base}/", 1)[1] for x in storage.expand(url, extensions=ext)]  # noqa: E731
    assert names(f"memory://{base}/", (".parquet",)) == ["a.parquet", "s/e.parquet"]
    assert names(f"memory://{base}/*/*.parquet") == ["s/e.parquet"]
    assert names(f"memory://{base}/**/*.parquet") == ["a.parquet", "s/e.parquet"]
    assert names(f"memory://{base}/_s/*.parquet") == ["_s/f.parquet"]
    assert names(f"memory://{base}/_*/*.parquet") == ["_s/f.parquet"]
    assert names(f"memory://{base}/_temporary/*/*.parquet") == ["_temporary/0/b.parquet"]


def test_one_hidden_rule_for_every_segment():
    assert storage.is_hidden("_temporary") and storage.is_hidden(".ipynb_checkpoints")
    assert not storage.is_hidden("part-0.parquet")
    assert storage.segment_matches("_tmp", "_tmp") and storage.segment_matches("_tmp", "_t*")
    assert not storage.segment_matches("_tmp", "*") and not storage.segment_matches(".x", "?x")
    assert storage.segment_matches("a1", "a[0-9]") and not storage.segment_matches("b1", "a*")


# ---- 2. both engines accept the same inputs ----------------------------------------------


@pytest.mark.parametrize("named", ["directory", "file", "glob"])
def test_dask_refuses_arrow_inputs_by_name_before_any_work(tmp_path, monkeypatch, named):
    pytest.importorskip("distributed")
    from xent_numba.engine import dask as xd

    def never(*a, **k):
        raise AssertionError("work started")

    monkeypatch.setattr(xd, "_plan", never)
    monkeypatch.setattr(xd, "_cluster", never)
    root = tmp_path / "mixed"
    write(root / "a.parquet", range(5))
    write(root / "b.arrow", range(5, 9))
    write(root / "c.feather", range(9, 12))
    given = {"directory": root, "file": root / "b.arrow", "glob": root / "*"}[named]
    out = tmp_path / "scores"
    res = score([given], out, "dask")
    assert res.exit_code == 2, res.output
    assert "b.arrow" in res.output and "--engine local" in res.output and "Traceback" not in res.output
    assert not out.exists() and not leftovers(tmp_path)
    # the --summary-json pre-check expands the same way, and so refuses the same
    res = score([given], out, "dask", "--summary-json", tmp_path / "s.json")
    assert res.exit_code == 2 and "--engine local" in res.output, res.output
    assert not (tmp_path / "s.json").exists()


def test_the_local_engine_reads_the_mixed_folder_whole(tmp_path):
    root = tmp_path / "mixed"
    want = write(root / "a.parquet", range(5)) + write(root / "b.arrow", range(5, 9))
    want += write(root / "c.feather", range(9, 12), compression="lz4") + write(root / "d.ipc", range(12, 13))
    out = tmp_path / "o.parquet"
    res = score([root], out, "local", "--summary-json", tmp_path / "s.json")
    assert res.exit_code == 0, res.output
    assert ids_of(out) == want


# ---- 3. links to folders ----------------------------------------------------------------


def test_linked_folders_are_followed_like_linked_files(tmp_path):
    root, elsewhere = tmp_path / "dump", tmp_path / "elsewhere"
    want = write(root / "a.parquet", range(3))
    write(elsewhere / "run" / "x.parquet", range(3, 6))
    write(elsewhere / "run" / "_temporary" / "y.parquet", range(900, 902))  # hidden below the link too
    write(elsewhere / "one.parquet", range(6, 8))
    os.symlink(elsewhere / "run", root / "b-linked")
    os.symlink(elsewhere / "one.parquet", root / "c.parquet")
    want += [3, 4, 5, 6, 7]
    out = tmp_path / "o.parquet"
    res = score([root], out)
    assert res.exit_code == 0, res.output
    assert ids_of(out) == want
    assert xio.expand_inputs([str(root / "*" / "*.parquet")]) == [str(root / "b-linked" / "x.parquet")]


@pytest.mark.parametrize("target", ["parent", "self", "root", "above"])
def test_a_link_loop_is_refused_at_once(tmp_path, target):
    root = tmp_path / "dump"
    write(root / "a.parquet", range(3))
    (root / "sub").mkdir()
    write(root / "sub" / "b.parquet", range(3, 5))
    link = root / "sub" / "loop"
    os.symlink({"parent": "..", "self": ".", "root": str(root), "above": str(tmp_path)}[target], link)
    started = time.monotonic()
    for given in (root, tmp_path / "dump" / "**" / "*.parquet"):
        out = tmp_path / "o.parquet"
        res = score([given], out)
        assert res.exit_code == 2, res.output
        assert "loop" in res.output and str(link) in res.output
        assert not out.exists()
    assert time.monotonic() - started < 30
    # a hidden link is skipped like any hidden name, loop or not
    os.rename(link, root / "sub" / ".loop")
    assert xio.expand_inputs([str(root)]) == [str(root / "a.parquet"), str(root / "sub" / "b.parquet")]


@pytest.mark.parametrize("how", ["file link", "folder link", "hard link"])
def test_a_file_reached_twice_is_refused(tmp_path, how):
    root = tmp_path / "dump"
    write(root / "run-3" / "x.parquet", range(3))
    if how == "file link":
        os.symlink(root / "run-3" / "x.parquet", root / "latest.parquet")
    elif how == "folder link":
        os.symlink("run-3", root / "latest")
    else:
        os.link(root / "run-3" / "x.parquet", root / "copy.parquet")
    out = tmp_path / "o.parquet"
    res = score([root], out)
    assert res.exit_code == 2, res.output
    assert "same file" in res.output and "run-3" in res.output and not out.exists()
    # named one by one, a file is the user's explicit choice: read as named
    assert xio.expand_inputs([str(root / "run-3" / "x.parquet")] * 2) == [str(root / "run-3" / "x.parquet")] * 2


def test_a_broken_link_with_a_data_name_is_refused(tmp_path):
    root = tmp_path / "dump"
    write(root / "a.parquet", range(3))
    os.symlink(tmp_path / "gone.parquet", root / "b.parquet")
    os.symlink(tmp_path / "gone.txt", root / "notes.txt")  # not data: no matter
    res = score([root], tmp_path / "o.parquet")
    assert res.exit_code == 2 and "broken link" in res.output and "b.parquet" in res.output, res.output


# ---- 4. many files ----------------------------------------------------------------------


def many_files(root: Path, n: int, rows: int = 2, arrow_every: int = 3) -> list[int]:
    """``n`` tiny files (every ``arrow_every``-th one Arrow IPC) in a few folders."""
    want = []
    for i in range(n):
        ext = ".arrow" if arrow_every and i % arrow_every == 0 else ".parquet"
        want += write(root / f"g{i // 500:02d}" / f"part-{i:05d}{ext}", range(i * rows, (i + 1) * rows))
    return want


_LOW_FD_RUN = """
import resource, sys
from xent_numba.engine import local as pipeline
pipeline.score_files([sys.argv[1]], sys.argv[2], pipeline.ScoreOptions(keep=("id",)))
print("fd limit", resource.getrlimit(resource.RLIMIT_NOFILE))
"""


def test_a_thousand_files_under_a_low_file_limit(tmp_path):
    root = tmp_path / "dump"
    want = many_files(root, 1100)
    out = tmp_path / "o.parquet"

    def low_limit():
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))

    res = subprocess.run([sys.executable, "-c", _LOW_FD_RUN, str(root), str(out)], capture_output=True,
                         env=xent_env(), timeout=300, preexec_fn=low_limit)
    assert res.returncode == 0, res.stderr.decode()[-3000:]
    assert b"(256, 256)" in res.stdout
    assert ids_of(out) == want


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts /proc/self/fd")
def test_open_files_stay_bounded_with_thousands_of_inputs(tmp_path, monkeypatch):
    root = tmp_path / "dump"
    want = many_files(root, 3000, arrow_every=2)
    seen = []
    real = xio.Source.batches

    def counting(self, *a, **k):
        seen.append(_open_fds())
        yield from real(self, *a, **k)

    monkeypatch.setattr(xio.Source, "batches", counting)
    before = _open_fds()
    out = tmp_path / "o.parquet"
    pipeline.score_files([str(root)], str(out), pipeline.ScoreOptions(keep=("id",)))
    assert len(seen) == 3000 and ids_of(out) == want
    # two per memory-mapped file whose batches are still in flight (io.MAX_MAPPED = 32 such
    # files at most), a few for the rest
    assert max(seen) - before <= 80, max(seen) - before
    assert _open_fds() <= before + 2


def test_files_of_one_schema_share_one_schema_object(tmp_path):
    root = tmp_path / "dump"
    root.mkdir()
    for i in range(50):  # pandas metadata differs from file to file (its index range)
        frame = table(range(i, i + 2)).to_pandas()
        frame.index = range(i, i + 2)
        pq.write_table(pa.Table.from_pandas(frame), root / f"p{i:02d}.parquet")
    pq.write_table(table(range(3)).cast(pa.schema([("id", pa.int32()), ("pred", pa.list_(pa.float32(), C)),
                                                     ("label", pa.int64())])), root / "q.parquet")
    assert len({pq.read_schema(p).metadata[b"pandas"] for p in sorted(root.glob("p*"))}) == 50
    sources = xio.plan_sources(xio.expand_inputs([str(root)]))
    assert len({id(s.schema) for s in sources}) == 2
    assert [p for p, _ in xio.distinct_schemas(sources)] == [str(root / "p00.parquet"), str(root / "q.parquet")]
    assert not hasattr(sources[0], "__dict__")  # a few fields per file, nothing else kept


# ---- 5. an input changed while it is read -----------------------------------------------


def big_arrow(path: Path, n=1_000_000) -> None:
    write(path, range(n), chunksize=20_000)


def _wait_for_output_bytes(folder: Path, proc, timeout=120.0) -> None:
    """Until the run's temporary output holds its first rows (reading is under way)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        if any(".tmp-" in p.name and p.stat().st_size > 0 for p in folder.iterdir()):
            return
        time.sleep(0.01)
    raise AssertionError("the run wrote nothing")


def _start(src: Path, out: Path):
    return subprocess.Popen([sys.executable, "-m", "xent_numba", "score", str(src), "-o", str(out), "--keep", "id",
                             "--batch-rows", "50", "-q"], env=xent_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)


def _check_refused(proc, src: Path, out: Path) -> None:
    _, err = proc.communicate(timeout=120)
    err = err.decode()
    assert proc.returncode != -7, "SIGBUS"
    assert proc.returncode == 2, err
    assert str(src) in err and "changed while it was being read" in err and "Traceback" not in err
    assert not out.exists() and not leftovers(out.parent)


def test_arrow_input_truncated_during_the_run_is_exit_2_not_sigbus(tmp_path):
    src, out_dir = tmp_path / "in.arrow", tmp_path / "out"
    big_arrow(src)
    out_dir.mkdir()
    out = out_dir / "o.parquet"
    proc = _start(src, out)
    _wait_for_output_bytes(out_dir, proc)
    started = time.monotonic()
    os.truncate(src, 4096)  # waits for the run to let go of its lease
    waited = time.monotonic() - started
    _check_refused(proc, src, out)
    assert os.path.getsize(src) == 4096 and waited < 40


def test_arrow_input_truncated_without_a_lease_is_exit_2(tmp_path):
    src, out_dir = tmp_path / "in.arrow", tmp_path / "out"
    big_arrow(src)
    out_dir.mkdir()
    out = out_dir / "o.parquet"
    with open(src, "r+b") as writer:  # open for writing elsewhere: no lease can be had
        proc = _start(src, out)
        _wait_for_output_bytes(out_dir, proc)
        os.ftruncate(writer.fileno(), 4096)
        _check_refused(proc, src, out)


def test_no_lease_reads_through_a_file_and_sees_a_truncation(tmp_path, monkeypatch):
    src = tmp_path / "in.arrow"
    write(src, range(10_000), chunksize=1000)
    monkeypatch.setattr(readers, "_lease_ready", lambda: False)
    source = xio.Source(str(src))
    assert not source.zero_copy()
    batches = source.batches(["id"], 1000)
    assert next(batches)["id"].to_pylist() == list(range(1000))
    os.truncate(src, 5000)
    with pytest.raises(InvalidInputError, match="changed while it was being read") as err:
        list(batches)
    assert str(src) in str(err.value)


def test_a_lease_is_taken_and_given_back(tmp_path):
    src = tmp_path / "in.arrow"
    write(src, range(1000), chunksize=100)
    source = xio.Source(str(src))
    assert source.zero_copy()  # mapped under a lease (main thread, a local file of ours)
    live = readers._Mapped.live
    got = pa.Table.from_batches(list(source.batches(["id"], 64)))
    assert got["id"].to_pylist() == list(range(1000))
    del got
    assert readers._Mapped.live == live  # the last view gone: unmapped, the lease released
    fd = os.open(src, os.O_WRONLY | os.O_NONBLOCK)  # a lease still held would refuse this
    os.close(fd)


@pytest.mark.parametrize("decoders", [1, 2])
def test_parquet_rewritten_in_place_between_planning_and_reading_is_refused(tmp_path, monkeypatch, decoders):
    src = tmp_path / "in.parquet"
    write(src, range(4000), row_group_size=500)
    data = src.read_bytes()
    real = pipeline.plan_inputs

    def then_rewrite(*a, **k):
        planned = real(*a, **k)
        with open(src, "r+b") as f:  # same name, same inode, same size: other bytes
            f.write(data[:4] + bytes(len(data) - 8) + data[-4:])
        st = os.stat(src)
        os.utime(src, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
        return planned

    monkeypatch.setattr(pipeline, "plan_inputs", then_rewrite)
    out = tmp_path / "o.parquet"
    with pytest.raises(InvalidInputError, match="changed while it was being read") as err:
        pipeline.score_files([str(src)], str(out), pipeline.ScoreOptions(keep=("id",)), threads=decoders)
    assert str(src) in str(err.value)
    assert not out.exists() and not leftovers(tmp_path)


@pytest.mark.parametrize("decoders", [1, 2])
@pytest.mark.parametrize("change", ["truncated", "rewritten"])
def test_parquet_changed_while_read_is_refused(tmp_path, decoders, change):
    src = tmp_path / "in.parquet"
    write(src, range(40_000), row_group_size=2000)
    source = xio.Source(str(src))
    batches = source.batches(["id"], 100, decoders)
    next(batches)
    if change == "truncated":
        os.truncate(src, os.path.getsize(src) // 2)
    else:
        with open(src, "r+b") as f:
            f.seek(100)
            f.write(b"\0" * 64)
        st = os.stat(src)
        os.utime(src, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    with pytest.raises(InvalidInputError, match="changed while it was being read"):
        list(batches)


@pytest.mark.parametrize("decoders", [1, 2])
def test_a_file_replaced_by_rename_while_read_is_read_to_its_end(tmp_path, decoders):
    src = tmp_path / "in.parquet"
    write(src, range(40_000), row_group_size=2000)
    source = xio.Source(str(src))
    batches = source.batches(["id"], 100, decoders)
    got = next(batches)["id"].to_pylist()
    write(tmp_path / "new.parquet", range(7))
    os.replace(tmp_path / "new.parquet", src)  # how careful writers publish a file
    got += [i for b in batches for i in b["id"].to_pylist()]
    assert got == list(range(40_000))


@pytest.mark.slow
def test_dask_refuses_an_input_changed_during_the_run(tmp_path, monkeypatch):
    pytest.importorskip("distributed")
    from xent_numba.engine import dask as xd

    src = tmp_path / "in.parquet"
    write(src, range(500))
    real = xd._run

    def then_rewrite(*a, **k):
        summary = real(*a, **k)
        write(src, range(500, 1000))
        return summary

    monkeypatch.setattr(xd, "_run", then_rewrite)
    out = tmp_path / "scores"
    res = score([src], out, "dask")
    assert res.exit_code == 2 and "changed while it was being read" in res.output, res.output
    assert not out.exists() and not leftovers(tmp_path)


# ---- 6. an Arrow IPC file's row width -----------------------------------------------------


@pytest.mark.parametrize("compression", ["uncompressed", "lz4"])
def test_arrow_bytes_per_row_from_the_first_batch(tmp_path, compression):
    src = tmp_path / "w.feather"
    n, c = 3000, 500
    p = np.full((n, c), 1 / c, dtype=np.float32)
    t = pa.table({"id": np.arange(n), "pred": pa.FixedSizeListArray.from_arrays(pa.array(p.ravel()), c),
                  "label": np.zeros(n, np.int64), "blob": pa.array([b"x" * 1000] * n)})
    feather.write_feather(t, src, compression=compression, chunksize=1000)
    source = xio.Source(str(src))
    assert source.bytes_per_row(["pred", "label"]) == pytest.approx(c * 4 + 8, rel=0.01)
    assert source.bytes_per_row(["id"]) == pytest.approx(8, rel=0.01)
    write(tmp_path / "e.arrow", [])
    assert xio.Source(str(tmp_path / "e.arrow")).bytes_per_row(["pred"]) == 0


# ---- a sweep over random layouts ----------------------------------------------------------


class Tree:
    """A random dump (seeded): folders and files at several depths, some hidden (. or _),
    folders and files linked from a place outside it, Parquet and Arrow IPC files, other
    files. ``want``: path -> rows of every file a user means (rows 10**6 and up are in files
    nobody means); ``trouble``: "loop" or "same file" when the tree holds a link that loops
    back or a second way to one data file (then the run is refused), else None."""

    def __init__(self, seed: int, root: Path, *, arrow=True, trouble=False, width=3, hidden=0.3):
        self.rng = np.random.default_rng(seed)
        self.hidden_odds = hidden
        self.root, self.outside = root, root.parent / f"{root.name}-outside"
        self.arrow, self.width = arrow, width
        self.want: dict[str, list[int]] = {}
        self.meant_folders: list[Path] = []
        self.trouble = self.again = None
        self._next, self._unmeant, self._links = 0, 10**6, 0
        self.fill(root, root, True, 0)
        self.hidden_loop()
        if trouble:
            self.make_trouble()

    def ids(self, n: int, meant: bool) -> range:
        if meant:
            self._next += n
            return range(self._next - n, self._next)
        self._unmeant += n
        return range(self._unmeant - n, self._unmeant)

    def name(self, stem: str, odds: float) -> tuple[str, bool]:
        if self.rng.random() < odds * self.hidden_odds / 0.3:
            return self.rng.choice([".", "_"]) + stem, True
        return stem, False

    def fill(self, real: Path, logical: Path, meant: bool, depth: int) -> None:
        real.mkdir(parents=True, exist_ok=True)
        if meant:
            self.meant_folders.append(logical)
        exts = [".parquet", ".arrow", ".feather", ".txt"] if self.arrow else [".parquet", ".parquet", ".txt"]
        for k in range(int(self.rng.integers(1, self.width + 2))):
            stem, hidden = self.name(f"f{k}", 0.25)
            ext = str(self.rng.choice(exts))
            if ext == ".txt":
                (real / f"{stem}{ext}").write_text("not data")
                continue
            ids = self.ids(int(self.rng.integers(1, 4)), meant and not hidden)
            compression = str(self.rng.choice(["uncompressed", "lz4"])) if ext != ".parquet" else None
            write(real / f"{stem}{ext}", ids, **({"compression": compression} if compression else {}))
            if meant and not hidden:
                self.want[str(logical / f"{stem}{ext}")] = list(ids)
        if self.rng.random() < 0.3:  # a file kept elsewhere, linked in
            stem, hidden = self.name("linked", 0.3)
            self._links += 1
            target = self.outside / f"file-{self._links}.parquet"
            ids = self.ids(2, meant and not hidden)
            write(target, ids)
            os.symlink(target, real / f"{stem}.parquet")
            if meant and not hidden:
                self.want[str(logical / f"{stem}.parquet")] = list(ids)
        if depth >= 3:
            return
        for k in range(int(self.rng.integers(1, self.width + 1))):
            stem, hidden = self.name(f"d{k}", 0.3)
            if self.rng.random() < 0.3:  # a folder kept elsewhere, linked in
                self._links += 1
                target = self.outside / f"dir-{self._links}"
                self.fill(target, logical / stem, meant and not hidden, depth + 1)
                os.symlink(target, real / stem)
            else:
                self.fill(real / stem, logical / stem, meant and not hidden, depth + 1)

    def real(self, logical: Path) -> Path:
        return Path(os.path.realpath(logical))

    def hidden_loop(self) -> None:
        """A loop behind a hidden name: skipped like any hidden name, so harmless."""
        folder = self.meant_folders[int(self.rng.integers(len(self.meant_folders)))]
        os.symlink(self.real(self.root), self.real(folder) / "_loop")

    def make_trouble(self) -> None:
        folder = self.meant_folders[int(self.rng.integers(len(self.meant_folders)))]
        if not self.want or self.rng.random() < 0.5:
            os.symlink(self.real(self.root), self.real(folder) / "zz-loop")
            self.trouble = "loop"
        else:
            path = Path(str(self.rng.choice(sorted(self.want))))
            os.symlink(self.real(path), self.real(folder) / f"zz-again{path.suffix}")
            self.trouble, self.again = "same file", path.suffix

    def rows(self, ext=None) -> list[int]:
        """The rows a user means, in order (files sorted by path), of ``ext`` files only if given."""
        return [i for p in sorted(self.want) if ext is None or p.endswith(ext) for i in self.want[p]]


def _expect(res, out: Path, tree: Tree, rows: list[int], trouble) -> None:
    if trouble:
        assert res.exit_code == 2 and trouble in res.output, res.output
    elif not rows:
        assert res.exit_code == 2 and ("holds no" in res.output or "no file matches" in res.output), res.output
    else:
        assert res.exit_code == 0, res.output
        assert ids_of(out) == rows
        return
    assert not out.exists() and "Traceback" not in res.output


@pytest.mark.parametrize("seed", range(16))
def test_random_layouts_read_exactly_the_files_meant(tmp_path, seed):
    tree = Tree(seed, tmp_path / "dump", trouble=seed % 4 == 3)
    out = tmp_path / "o.parquet"
    _expect(score([tree.root], out), out, tree, tree.rows(), tree.trouble)
    # a recursive glob means the same files (of its extension)
    trouble = tree.trouble if tree.trouble == "loop" or tree.again == ".parquet" else None
    out.unlink(missing_ok=True)
    _expect(score([tree.root / "**" / "*.parquet"], out), out, tree, tree.rows(".parquet"), trouble)


def test_a_wide_random_layout_of_thousands_of_files(tmp_path):
    tree = Tree(101, tmp_path / "dump", width=14, hidden=0.05)
    assert len(tree.want) > 2000
    out = tmp_path / "o.parquet"
    _expect(score([tree.root], out), out, tree, tree.rows(), None)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 7])
def test_random_parquet_layouts_read_the_same_by_dask(tmp_path, seed):
    pytest.importorskip("distributed")
    tree = Tree(seed, tmp_path / "dump", arrow=False)
    out = tmp_path / "scores"
    _expect(score([tree.root], out, "dask"), out, tree, tree.rows(), None)
