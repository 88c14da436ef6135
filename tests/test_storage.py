"""xent_numba.io.storage against a real S3 server (moto on 127.0.0.1): prefixes, globs, a
Feather object, atomic writes, and every error naming the URL."""

from __future__ import annotations

import io
import socket

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.feather as feather
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from xent_numba.errors import InvalidInputError
from xent_numba.io import storage


def _table(i: int, n: int = 5) -> pa.Table:
    return pa.table({"id": pa.array(range(i * 100, i * 100 + n)), "pred": pa.array([0.5] * n)})


def _put(s3, key: str, data: bytes) -> None:
    with s3.fs.open_output_stream(key) as f:
        f.write(data)


def _parquet(t: pa.Table) -> bytes:
    buf = io.BytesIO()
    pq.write_table(t, buf)
    return buf.getvalue()


def _read_parquet(loc) -> pa.Table:
    pf = pq.ParquetFile(storage.open_input(loc), buffer_size=1 << 20, pre_buffer=False)
    return pa.Table.from_batches(list(pf.iter_batches(batch_size=2)), schema=pf.schema_arrow)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_is_url_and_options():
    assert storage.is_url("s3://b/k") and storage.is_url("file:///tmp/x") and storage.is_url("gs://b")
    assert not storage.is_url("/tmp/x.parquet") and not storage.is_url("C://x") and not storage.is_url("x.parquet")
    assert storage.parse_options(["region=eu-west-1", "endpoint_override=http://h:1/?a=b"]) == {
        "region": "eu-west-1", "endpoint_override": "http://h:1/?a=b"}
    with pytest.raises(InvalidInputError, match="KEY=VALUE"):
        storage.parse_options(["region"])


def test_prefix_lists_data_files_sorted_skipping_hidden(s3):
    b = s3.bucket()
    for name, i in [("run/p-2.parquet", 2), ("run/p-1.parquet", 1), ("run/sub/p-3.parquet", 3),
                    ("run/_temporary/p-9.parquet", 9), ("run/.p-8.parquet", 8)]:
        _put(s3, f"{b}/{name}", _parquet(_table(i)))
    _put(s3, f"{b}/run/_SUCCESS", b"")
    _put(s3, f"{b}/run/notes.txt", b"hello")
    for url in (f"s3://{b}/run/", f"s3://{b}/run"):
        locs = storage.expand(url, extensions=(".parquet",))
        assert [str(x) for x in locs] == [f"s3://{b}/run/p-1.parquet", f"s3://{b}/run/p-2.parquet",
                                          f"s3://{b}/run/sub/p-3.parquet"]
    got = pa.concat_tables(_read_parquet(x) for x in locs)
    assert got.equals(pa.concat_tables([_table(1), _table(2), _table(3)]))


def test_glob_stays_in_its_segment_and_double_star_recurses(s3):
    b = s3.bucket()
    for name in ["d/a1.parquet", "d/a2.parquet", "d/b1.parquet", "d/x/a3.parquet", "d/a9.csv"]:
        _put(s3, f"{b}/{name}", _parquet(_table(1)))
    names = lambda url: [str(x).split(f"{b}/", 1)[1] for x in storage.expand(url)]  # noqa: E731
    assert names(f"s3://{b}/d/a*.parquet") == ["d/a1.parquet", "d/a2.parquet"]
    assert names(f"s3://{b}/d/?1.parquet") == ["d/a1.parquet", "d/b1.parquet"]
    assert names(f"s3://{b}/d/**/a*.parquet") == ["d/a1.parquet", "d/a2.parquet", "d/x/a3.parquet"]
    assert names(f"s3://{b}/*/x/*.parquet") == ["d/x/a3.parquet"]
    with pytest.raises(InvalidInputError, match=rf"s3://{b}/d/z\*\.parquet: no object matches"):
        storage.expand(f"s3://{b}/d/z*.parquet")


def test_an_existing_object_is_taken_literally(s3):
    b = s3.bucket()
    _put(s3, f"{b}/odd[1].parquet", _parquet(_table(4)))
    _put(s3, f"{b}/odd1.parquet", _parquet(_table(5)))
    locs = storage.expand(f"s3://{b}/odd[1].parquet")
    assert [str(x) for x in locs] == [f"s3://{b}/odd[1].parquet"]
    assert _read_parquet(locs[0]).equals(_table(4))


def test_single_feather_object_reads_by_batch(s3):
    b = s3.bucket()
    t = pa.concat_tables([_table(1), _table(2)])
    buf = io.BytesIO()
    feather.write_feather(t, buf, chunksize=4, compression="uncompressed")
    _put(s3, f"{b}/one.feather", buf.getvalue())
    [loc] = storage.expand(f"s3://{b}/one.feather", extensions=(".feather",))
    reader = pa.ipc.open_file(storage.open_input(loc))
    assert reader.count_rows() == 10 and reader.num_record_batches > 1
    got = pa.Table.from_batches([reader.get_batch(i) for i in range(reader.num_record_batches)])
    assert got.equals(t)


@pytest.mark.parametrize("fmt", ["parquet", "csv", "jsonl"])
def test_atomic_write_reads_back_and_leaves_no_temporary(s3, fmt):
    b = s3.bucket()
    url = f"s3://{b}/out/scores.{fmt}"
    _put(s3, f"{b}/out/keep.txt", b"x")
    t = pa.concat_tables([_table(1), _table(2)])
    out = storage.RemoteOutput(url)
    f = out.open()
    if fmt == "parquet":
        w = pq.ParquetWriter(f, t.schema)
        for batch in t.to_batches(max_chunksize=3):
            w.write_batch(batch)
        w.close()
    elif fmt == "csv":
        w = pacsv.CSVWriter(f, t.schema)
        w.write_table(t)
        w.close()
    else:
        f.write("".join(f'{{"id": {i}, "pred": {p}}}\n' for i, p in zip(t["id"].to_pylist(), t["pred"].to_pylist(), strict=True)).encode())
    assert s3.keys(b) == ["out/keep.txt"]  # nothing visible until the upload completes
    out.commit()
    assert s3.keys(b) == ["out/keep.txt", f"out/scores.{fmt}"]
    [loc] = storage.expand(url)
    data = storage.open_input(loc).read()
    if fmt == "parquet":
        back = pq.read_table(pa.BufferReader(data))
    elif fmt == "csv":
        back = pacsv.read_csv(pa.BufferReader(data))
    else:
        import pyarrow.json as pajson
        back = pajson.read_json(pa.BufferReader(data))
    assert back.equals(t)


def test_existing_target_refused_then_overwritten(s3):
    b = s3.bucket()
    _put(s3, f"{b}/o.parquet", b"old")
    with pytest.raises(InvalidInputError, match=rf"^s3://{b}/o.parquet: exists; pass --overwrite"):
        storage.RemoteOutput(f"s3://{b}/o.parquet")
    out = storage.RemoteOutput(f"s3://{b}/o.parquet", overwrite=True)
    out.open().write(b"new")
    out.commit()
    assert s3.fs.open_input_file(f"{b}/o.parquet").read() == b"new"
    assert s3.keys(b) == ["o.parquet"]


def test_abort_and_interrupt_remove_the_temporary_object(s3):
    b = s3.bucket()
    out = storage.RemoteOutput(f"s3://{b}/x.parquet")
    out.open().write(b"partial")
    out.abort()
    assert s3.keys(b) == []
    # Ctrl-C between the upload and the move: the temporary object exists, then is removed
    out = storage.RemoteOutput(f"s3://{b}/x.parquet")
    out.open().write(b"whole")
    real_move = out.loc.fs.move

    class Moving:  # pyarrow's filesystem methods are read-only: wrap the fs instead
        def __getattr__(self, name):
            return getattr(real_move.__self__, name)

        def move(self, a, b_):
            raise KeyboardInterrupt

    out.loc.fs = Moving()
    with pytest.raises(KeyboardInterrupt):
        out.commit()
    assert s3.keys(b) == []


def test_output_must_not_be_an_input_a_bucket_or_a_prefix(s3):
    b = s3.bucket()
    _put(s3, f"{b}/in/a.parquet", _parquet(_table(1)))
    inputs = storage.expand(f"s3://{b}/in/")
    with pytest.raises(InvalidInputError, match="is also an input"):
        storage.RemoteOutput(f"s3://{b}/in/a.parquet", overwrite=True, inputs=inputs)
    with pytest.raises(InvalidInputError, match="prefix holding objects"):
        storage.RemoteOutput(f"s3://{b}/in")
    for url in (f"s3://{b}", f"s3://{b}/", f"s3://{b}/in/"):
        with pytest.raises(InvalidInputError, match="must name an object"):
            storage.RemoteOutput(url)


def test_missing_bucket_and_key_are_named(s3):
    b = s3.bucket()
    for url in ("s3://no-such-bucket-x/run/", "s3://no-such-bucket-x/a.parquet", "s3://no-such-bucket-x/*.parquet",
                "s3://no-such-bucket-x"):
        with pytest.raises(InvalidInputError, match=rf"^{url.replace('*', '.')}: bucket 'no-such-bucket-x' does not exist$"):
            storage.expand(url)
    with pytest.raises(InvalidInputError, match="bucket 'no-such-bucket-x' does not exist"):
        storage.RemoteOutput("s3://no-such-bucket-x/o.parquet")
    with pytest.raises(InvalidInputError, match=rf"^s3://{b}/nope.parquet: no such object or prefix$"):
        storage.expand(f"s3://{b}/nope.parquet")
    with pytest.raises(InvalidInputError, match=rf"^s3://{b}/nope/: no such object or prefix$"):
        storage.expand(f"s3://{b}/nope/")


def test_access_denied_is_named(s3):
    import boto3
    import moto.settings

    b = s3.bucket()
    _put(s3, f"{b}/a.parquet", _parquet(_table(1)))
    iam = boto3.client("iam", endpoint_url=s3.endpoint, region_name="us-east-1")
    user = f"u{b}"
    iam.create_user(UserName=user)
    key = iam.create_access_key(UserName=user)["AccessKey"]
    moto.settings.INITIAL_NO_AUTH_ACTION_COUNT = 0  # the server checks credentials from now on
    try:
        for opts in ({"access_key": key["AccessKeyId"], "secret_key": key["SecretAccessKey"]},
                     {"access_key": "AKIDBOGUS", "secret_key": "bogus"}):
            with pytest.raises(InvalidInputError, match=rf"^s3://{b}/a.parquet: access denied \(\w+\)"):
                storage.expand(f"s3://{b}/a.parquet", opts)
            with pytest.raises(InvalidInputError, match=rf"^s3://{b}/: access denied"):
                storage.expand(f"s3://{b}/", opts)
    finally:
        moto.settings.INITIAL_NO_AUTH_ACTION_COUNT = float("inf")


def test_unreachable_endpoint_names_the_endpoint():
    endpoint = f"http://127.0.0.1:{_closed_port()}"
    opts = {"endpoint_override": endpoint, "retries": "1", "access_key": "k", "secret_key": "s"}
    with pytest.raises(InvalidInputError, match=rf"^s3://b/k.parquet: cannot reach the storage endpoint {endpoint} \("):
        storage.expand("s3://b/k.parquet", opts)
    with pytest.raises(InvalidInputError, match=rf"cannot reach the storage endpoint {endpoint}"):
        storage.RemoteOutput("s3://b/o.parquet", opts)


def test_bad_storage_options_are_named():
    with pytest.raises(InvalidInputError, match="storage option anonymous: expected true or false"):
        storage.resolve("s3://b/k", {"anonymous": "perhaps"})
    with pytest.raises(InvalidInputError, match=r"^s3://b/k: bad storage options"):
        storage.resolve("s3://b/k", {"no_such_option": "1", "region": "us-east-1"})


def test_server_stopped_mid_run_leaves_no_object(s3):
    b = s3.bucket()
    _put(s3, f"{b}/in.parquet", _parquet(pa.concat_tables([_table(i) for i in range(40)])))
    [src] = storage.expand(f"s3://{b}/in.parquet")
    pf = pq.ParquetFile(storage.open_input(src), buffer_size=1 << 20, pre_buffer=False)
    out = storage.RemoteOutput(f"s3://{b}/out.parquet", {"retries": "1"})
    w = pq.ParquetWriter(out.open(), pf.schema_arrow)
    w.write_batch(next(pf.iter_batches(batch_size=10)))
    s3.stop()
    try:
        with pytest.raises(InvalidInputError, match=rf"^s3://{b}/out.parquet: cannot write: cannot reach the storage endpoint {s3.endpoint}"):
            try:
                w.close()
            except OSError:
                pass  # the upload fails at close; the writer then finishes it as a failure
            out.commit()
        with pytest.raises(InvalidInputError, match=rf"^s3://{b}/in.parquet: cannot reach the storage endpoint"):
            storage.expand(f"s3://{b}/in.parquet", {"retries": "1"})
    finally:
        s3.restart()
    assert s3.keys(b) == ["in.parquet"]


def test_file_urls_resolve_to_the_local_filesystem(tmp_path):
    pq.write_table(_table(1), tmp_path / "a.parquet")
    pq.write_table(_table(2), tmp_path / "b.parquet")
    locs = storage.expand(f"file://{tmp_path}/", extensions=(".parquet",))
    assert [str(x) for x in locs] == [f"file://{tmp_path}/a.parquet", f"file://{tmp_path}/b.parquet"]
    assert isinstance(locs[0].fs, pafs.LocalFileSystem)
    assert _read_parquet(locs[1]).equals(_table(2))
    out = storage.RemoteOutput(f"file://{tmp_path}/o.csv")
    out.open().write(b"a\n1\n")
    out.commit()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.parquet", "b.parquet", "o.csv"]


def test_other_protocols_go_through_fsspec():
    pytest.importorskip("fsspec")
    import fsspec

    mem = fsspec.filesystem("memory")
    buf = io.BytesIO()
    pq.write_table(_table(7), buf)
    mem.pipe("/xent-test/m/a.parquet", buf.getvalue())
    try:
        [loc] = storage.expand("memory://xent-test/m/*.parquet")
        assert _read_parquet(loc).equals(_table(7))
        out = storage.RemoteOutput("memory://xent-test/m/o.csv")  # fsspec's move under pyarrow's
        out.open().write(b"a\n1\n")
        out.commit()
        assert mem.cat("/xent-test/m/o.csv") == b"a\n1\n"
        assert sorted(mem.ls("/xent-test/m", detail=False)) == ["/xent-test/m/a.parquet", "/xent-test/m/o.csv"]
    finally:
        mem.rm("/xent-test", recursive=True)
    with pytest.raises(InvalidInputError, match=r"^nosuchproto://x: unknown storage protocol"):
        storage.expand("nosuchproto://x")


def test_missing_pieces_are_named_not_raised():
    with pytest.raises(InvalidInputError, match=r"^hdfs://nn:8020/x.parquet: cannot connect \(.*\); HDFS needs Java and libhdfs") as e:
        storage.expand("hdfs://nn:8020/x.parquet")
    assert "\n" not in str(e.value)
    lg = storage.resolve("gs://b/k/x.parquet", {"anonymous": "true", "retry_time_limit": "1"})
    assert (lg.fs.type_name, lg.path) == ("gcs", "b/k/x.parquet")
    la = storage.resolve("abfs://cont@acct.dfs.core.windows.net/p/x.parquet")
    assert (la.fs.type_name, la.path) == ("abfs", "cont/p/x.parquet")


def test_remote_dataset_prefix_rules_and_abort(s3):
    b = s3.bucket()
    _put(s3, f"{b}/ds/part.00000.parquet", b"x")
    _put(s3, f"{b}/other/notes.txt", b"x")
    _put(s3, f"{b}/obj.parquet", b"x")
    with pytest.raises(InvalidInputError, match=rf"^s3://{b}/ds: exists; pass --overwrite"):
        storage.RemoteDataset(f"s3://{b}/ds")
    with pytest.raises(InvalidInputError, match="holds more than the part files"):
        storage.RemoteDataset(f"s3://{b}/other", overwrite=True)
    with pytest.raises(InvalidInputError, match="is an object"):
        storage.RemoteDataset(f"s3://{b}/obj.parquet")
    with pytest.raises(InvalidInputError, match="bucket 'no-such-bucket-x' does not exist"):
        storage.RemoteDataset("s3://no-such-bucket-x/ds")
    target = storage.RemoteDataset(f"s3://{b}/new")
    _put(s3, f"{target.tmp}/part.00000.parquet", b"partial")
    target.abort()
    assert s3.keys(b) == ["ds/part.00000.parquet", "obj.parquet", "other/notes.txt"]
    target = storage.RemoteDataset(f"s3://{b}/ds", overwrite=True)
    _put(s3, f"{target.tmp}/part.00001.parquet", b"new")
    target.commit()  # the new parts in, the old one that no new part replaced out
    assert s3.keys(b) == ["ds/part.00001.parquet", "obj.parquet", "other/notes.txt"]
