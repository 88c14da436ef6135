"""Output formats: the format an OUTPUT name asks for, and the writers of CSV and JSON
Lines text (each float in its shortest round-trip form, binary as UTF-8), with writes that
never stop short."""

from __future__ import annotations

import errno
import json
import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

try:
    import fcntl
except ImportError:  # not POSIX: no leases, mapped Arrow IPC is read through a file
    fcntl = None

from ..errors import InvalidInputError

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


def write_all(f, data) -> None:
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


class WholeWrites:
    """A binary file whose ``write`` writes all it is given (``write_all``); everything else
    is the file's own."""

    def __init__(self, f):
        self._f = f

    def write(self, data) -> int:
        write_all(self._f, data)
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


class JsonLines:
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
                write_all(self._f, data)
            self._rows += part.num_rows

    def close(self) -> None:
        pass


def _csv_table(table: pa.Table, first_row: int) -> pa.Table:
    """``table`` with every column as CSV can write it (``_csv_text``)."""
    names = table.column_names
    cols = [_converted(table.column(i), _csv_text, name, first_row, "CSV") for i, name in enumerate(names)]
    return pa.Table.from_arrays(cols, names=names)


class Csv:
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
        write_all(self._f, data)
        self._rows += table.num_rows

    def close(self) -> None:
        if self._header:  # no rows: the header alone
            self.write_table(self._schema.empty_table())


def is_number(t) -> bool:
    return pa.types.is_floating(t) or pa.types.is_integer(t) or pa.types.is_decimal(t)


def _is_plain_number(t) -> bool:
    return pa.types.is_floating(t) or pa.types.is_integer(t)


def parquet_compression(schema: pa.Schema) -> dict:
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


