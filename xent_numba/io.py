"""Files in and out: input discovery, batch readers (Parquet, memory-mapped Arrow IPC /
Feather) and atomic writers (Parquet, CSV, JSON lines, Arrow IPC / Feather)."""

from __future__ import annotations

import glob
import json
import math
import os
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

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


def expand_inputs(inputs, extensions=INPUT_EXT) -> list[str]:
    """Files named by INPUT arguments, in the order given: files as they are, directories
    as their data files (recursively, sorted), globs as their sorted matches."""
    files: list[str] = []
    for item in inputs:
        item = str(item)
        if os.path.isdir(item):
            found = sorted(
                str(p) for p in Path(item).rglob("*")
                if p.is_file() and p.suffix.lower() in extensions and not p.name.startswith((".", "_"))
            )
            if not found:
                raise InvalidInputError(f"{item}: directory holds no {'/'.join(extensions)} files")
            files += found
        elif any(ch in item for ch in "*?["):
            found = sorted(p for p in glob.glob(item, recursive=True) if os.path.isfile(p))
            if not found:
                raise InvalidInputError(f"{item}: no file matches this pattern")
            files += found
        elif os.path.isfile(item):
            files.append(item)
        elif os.path.exists(item):
            raise InvalidInputError(f"{item}: not a regular file")
        else:
            raise InvalidInputError(f"{item}: no such file or directory")
    if not files:
        raise InvalidInputError("no input files given")
    return files


# Parquet is read through a buffered stream of this many bytes, not memory-mapped: the
# reader then holds a few buffers at a time, where a memory map would leave every page of
# the file it touched counted in the process's resident memory (the whole file, at the end).
PARQUET_BUFFER_BYTES = 8 << 20


class Source:
    """One input file: its schema, its row count, and its batches (only the named columns)."""

    def __init__(self, path: str):
        self.path = path
        self.kind = "arrow" if path.lower().endswith(IPC_EXT) else "parquet"
        try:
            if self.kind == "parquet":
                self._pf = pq.ParquetFile(path, buffer_size=PARQUET_BUFFER_BYTES, pre_buffer=False)
                self.schema = self._pf.schema_arrow
                self.num_rows = self._pf.metadata.num_rows
            else:
                self._reader = pa.ipc.open_file(pa.memory_map(path, "r"))
                self.schema = self._reader.schema
                self.num_rows = sum(
                    self._reader.get_batch(i).num_rows for i in range(self._reader.num_record_batches)
                )
        except FileNotFoundError:
            raise InvalidInputError("no such file", source=path) from None
        except PermissionError:
            raise InvalidInputError("permission denied", source=path) from None
        except (pa.ArrowInvalid, pa.ArrowIOError, OSError) as exc:
            what = "Parquet" if self.kind == "parquet" else "Arrow IPC/Feather"
            raise InvalidInputError(f"cannot read as {what} ({exc})", source=path) from None

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

    def batches(self, columns, batch_rows: int):
        """Record batches of at most ``batch_rows`` rows holding ``columns``, in file order."""
        try:
            if self.kind == "parquet":
                yield from self._pf.iter_batches(batch_size=batch_rows, columns=columns, use_threads=True)
                return
            for i in range(self._reader.num_record_batches):
                b = self._reader.get_batch(i).select(columns)
                for start in range(0, b.num_rows, batch_rows):
                    yield b.slice(start, batch_rows)
        except (pa.ArrowInvalid, pa.ArrowIOError, OSError) as exc:
            raise InvalidInputError(f"cannot decode the file, it may be corrupt or truncated ({exc})", source=self.path) from None


def output_format(path: str, fmt: str | None) -> str:
    if fmt:
        if fmt not in FORMAT_CHOICES:
            raise InvalidInputError(f"--format must be one of {', '.join(FORMAT_CHOICES)}; got {fmt!r}")
        return fmt
    ext = Path(path).suffix.lower()
    if ext not in FORMATS:
        raise InvalidInputError(
            f"cannot tell the output format from {path!r}: use a .parquet, .csv, .jsonl/.ndjson "
            "or .arrow/.feather name, or --format"
        )
    return FORMATS[ext]


class _JsonLines:
    def __init__(self, f):
        self._f = f

    def write(self, batch: pa.RecordBatch) -> None:
        lines = []
        for row in batch.to_pylist():
            for k, v in row.items():
                if isinstance(v, float) and not math.isfinite(v):
                    row[k] = None if math.isnan(v) else ("Infinity" if v > 0 else "-Infinity")
            lines.append(json.dumps(row, default=str))
        if lines:
            self._f.write(("\n".join(lines) + "\n").encode())

    def close(self) -> None:
        pass


def _is_number(t) -> bool:
    return pa.types.is_floating(t) or pa.types.is_integer(t) or pa.types.is_decimal(t)


class AtomicWriter:
    """Writes record batches to a temporary file beside ``path``; ``commit`` renames it into
    place, ``abort`` removes it. A failed or interrupted run leaves nothing behind."""

    def __init__(self, path: str, fmt: str, overwrite: bool):
        self.path = Path(path)
        self.fmt = fmt
        if self.path.exists() and not overwrite:
            raise InvalidInputError(f"{path} exists; pass --overwrite to replace it")
        if self.path.is_dir():
            raise InvalidInputError(f"{path} is a directory")
        if not self.path.parent.exists():
            raise InvalidInputError(f"{self.path.parent}: output directory does not exist")
        self.tmp = self.path.parent / f".{self.path.name}.tmp-{uuid.uuid4().hex[:8]}"
        self._file = None
        self._writer = None

    def write(self, batch: pa.RecordBatch) -> None:
        if self._writer is None:
            self._open(batch.schema)
        self._writer.write(batch)

    def _open(self, schema: pa.Schema) -> None:
        self._file = open(self.tmp, "wb")
        if self.fmt == "parquet":
            # dictionary encoding only where it pays: on losses and other numbers it hashes
            # every value, to fall back to plain encoding anyway (5x the write time of a loss)
            dictionary = [f.name for f in schema if not _is_number(f.type)]
            self._writer = pq.ParquetWriter(self._file, schema, use_dictionary=dictionary)
        elif self.fmt == "csv":
            self._writer = pacsv.CSVWriter(self._file, schema)
        elif self.fmt == "jsonl":
            self._writer = _JsonLines(self._file)
        else:
            self._writer = pa.ipc.new_file(self._file, schema)

    def commit(self, schema: pa.Schema) -> None:
        if self._writer is None:  # no rows: still a valid, empty file with the columns
            self._open(schema)
        self._writer.close()
        self._file.close()
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        try:
            if self._writer is not None:
                self._writer.close()
        except Exception:  # the file is being thrown away
            pass
        if self._file is not None:
            self._file.close()
        self.tmp.unlink(missing_ok=True)
