"""Files that live elsewhere: URLs (``s3://``, ``gs://``, ``hdfs://``, ``abfs://``, ``file://``
and, through fsspec, any other protocol) resolved to a pyarrow filesystem and a path in it;
their listing (a prefix, a glob), reading and atomic writing.

pyarrow's own filesystems serve s3, gs, hdfs, abfs and local files; fsspec (wrapped in
``pyarrow.fs.PyFileSystem``) is only the fallback for other protocols. Credentials and
endpoints come from where those libraries look (environment, config files, instance metadata),
plus ``AWS_ENDPOINT_URL`` / ``AWS_ENDPOINT_URL_S3`` for S3 and the caller's
``storage_options`` (``--storage-option KEY=VALUE``) for what the environment cannot say.
Every failure is an ``InvalidInputError`` naming the URL.
"""

from __future__ import annotations

import fnmatch
import os
import re
import uuid
from dataclasses import dataclass
from datetime import timedelta
from functools import lru_cache

import pyarrow as pa
import pyarrow.fs as pafs

from ..errors import InvalidInputError

_URL = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]+)://")
_WILDCARDS = "*?["
CLOUD_EXTRA = "pip install 'xent-numba[cloud]'"

# S3FileSystem / GcsFileSystem keyword types, to turn ``--storage-option`` strings into them
_S3_BOOL = {
    "anonymous", "background_writes", "allow_delayed_open", "allow_bucket_creation",
    "allow_bucket_deletion", "check_directory_existence_before_creation", "force_virtual_addressing",
}
_S3_FLOAT = {"request_timeout", "connect_timeout"}
_S3_INT = {"load_frequency"}
_GCS_BOOL = {"anonymous"}


def is_url(path) -> bool:
    """True for ``scheme://...`` (a one-letter scheme is a Windows drive, not a URL)."""
    return isinstance(path, str) and _URL.match(path) is not None


def local_path(path: str) -> str:
    """``file:///x`` (or ``file://localhost/x``) as the local path ``/x``, so local files keep
    every local rule whatever their spelling; anything else unchanged."""
    if isinstance(path, str) and path[:7].lower() == "file://":
        rest = path[7:]
        return rest if rest.startswith("/") else "/" + rest.split("/", 1)[-1]
    return path


def parse_options(pairs) -> dict:
    """``["KEY=VALUE", ...]`` (the CLI's repeatable ``--storage-option``) as a dict."""
    out = {}
    for pair in pairs or ():
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise InvalidInputError(f"--storage-option wants KEY=VALUE, got {pair!r}")
        out[key.strip()] = value
    return out


@dataclass(eq=False)
class Location:
    """A file or prefix in a filesystem: ``url`` as the user wrote it (every error names it),
    ``fs`` and ``path`` inside it, ``endpoint`` (what a connection error says it tried)."""

    url: str
    fs: pafs.FileSystem
    path: str
    endpoint: str = ""

    def __str__(self) -> str:
        return self.url

    def key(self) -> tuple:
        """What two locations share when they are the same object."""
        return (self.fs.type_name, self.endpoint, self.path.rstrip("/"))

    def child(self, path: str) -> Location:
        """The location of ``path`` (from a listing of this one's filesystem)."""
        base = self.path.rstrip("/")
        head = self.url.rstrip("/")
        if head.endswith(base) and path.startswith(base):
            url = head[: len(head) - len(base)] + path
        else:
            url = f"{_URL.match(self.url).group(1)}://{path.lstrip('/')}"
        return Location(url, self.fs, path, self.endpoint)


def _bool(name, value) -> bool:
    if isinstance(value, bool):
        return value
    v = str(value).strip().lower()
    if v in ("1", "true", "yes", "on"):
        return True
    if v in ("0", "false", "no", "off"):
        return False
    raise InvalidInputError(f"storage option {name}: expected true or false, got {value!r}")


def _number(name, value, kind):
    try:
        return kind(value)
    except (TypeError, ValueError):
        raise InvalidInputError(f"storage option {name}: expected a number, got {value!r}") from None


def _loose(value):
    """An fsspec option from the command line: booleans and numbers as such, else text."""
    if not isinstance(value, str):
        return value
    low = value.lower()
    if low in ("true", "false"):
        return low == "true"
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    return value


def _split(url: str) -> tuple[str, str]:
    """``scheme://rest`` -> (lower-case scheme, rest). No query strings: ``?`` is a wildcard."""
    scheme = _URL.match(url).group(1).lower()
    return scheme, url[len(scheme) + 3:]


def resolve(url: str, storage_options: dict | None = None) -> Location:
    """The filesystem and the path inside it for ``url``."""
    opts = dict(storage_options or {})
    scheme, rest = _split(url)
    try:
        if scheme in ("s3", "s3a"):
            fs, endpoint = _s3(rest.split("/", 1)[0], opts)
            return Location(url, fs, rest, endpoint)
        if scheme in ("gs", "gcs"):
            return Location(url, _gcs(opts), rest, opts.get("endpoint_override", "storage.googleapis.com"))
        if scheme == "file":
            if opts:
                raise InvalidInputError(f"file:// takes no storage options (got {', '.join(opts)})", source=url)
            return Location(url, pafs.LocalFileSystem(), local_path(url), "local")
        if scheme in ("hdfs", "viewfs", "abfs", "abfss"):
            return _pyarrow_uri(url, scheme, rest, opts)
        return _fsspec(url, scheme, opts)
    except InvalidInputError:
        raise
    except (TypeError, ValueError, pa.ArrowInvalid) as exc:
        raise InvalidInputError(f"bad storage options ({_first_line(exc)})", source=url) from None
    except (OSError, pa.ArrowException) as exc:
        hint = "; HDFS needs Java and libhdfs (JAVA_HOME, HADOOP_HOME, ARROW_LIBHDFS_DIR)" if scheme in ("hdfs", "viewfs") else ""
        raise InvalidInputError(f"cannot connect ({_first_line(exc)}){hint}", source=url) from None


def _s3(bucket: str, opts: dict):
    kw = {}
    for name, value in opts.items():
        if name in _S3_BOOL:
            kw[name] = _bool(name, value)
        elif name in _S3_FLOAT:
            kw[name] = _number(name, value, float)
        elif name in _S3_INT:
            kw[name] = _number(name, value, int)
        elif name == "retries":
            kw["retry_strategy"] = pafs.AwsStandardS3RetryStrategy(max_attempts=_number(name, value, int))
        elif name in ("endpoint_url", "endpoint"):
            kw["endpoint_override"] = value
        else:
            kw[name] = value
    # the AWS SDK inside pyarrow reads credentials and region from the environment and
    # ~/.aws itself; the endpoint variables only in ``FileSystem.from_uri``, so here too
    if "endpoint_override" not in kw:
        env = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        if env:
            kw["endpoint_override"] = env
    if "region" not in kw and "endpoint_override" not in kw and bucket:
        region = _bucket_region(bucket)  # as ``from_uri`` does: a bucket answers from its region
        if region:
            kw["region"] = region
    fs = pafs.S3FileSystem(**kw)
    endpoint = kw.get("endpoint_override") or f"https://s3.{fs.region}.amazonaws.com"
    return fs, endpoint


@lru_cache(maxsize=64)
def _bucket_region(bucket: str) -> str | None:
    if os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION"):
        return None  # the SDK takes it from there
    try:
        return pafs.resolve_s3_region(bucket)
    except (OSError, pa.ArrowException):
        return None  # the first real request says what is wrong, naming the URL


def _gcs(opts: dict) -> pafs.FileSystem:
    kw = {}
    for name, value in opts.items():
        if name in _GCS_BOOL:
            kw[name] = _bool(name, value)
        elif name == "retry_time_limit":
            kw[name] = timedelta(seconds=_number(name, value, float))
        else:
            kw[name] = value
    return pafs.GcsFileSystem(**kw)


def _pyarrow_uri(url, scheme, rest, opts) -> Location:
    """HDFS and Azure through ``FileSystem.from_uri``, the options as its query parameters."""
    from urllib.parse import quote, urlencode

    authority, _, _ = rest.partition("/")
    query = "?" + urlencode({k: str(v) for k, v in opts.items()}) if opts else ""
    fs, path = pafs.FileSystem.from_uri(quote(url, safe=":/@%") + query)
    return Location(url, fs, path, f"{scheme}://{authority}")


def _fsspec(url, scheme, opts) -> Location:
    try:
        import fsspec
    except ImportError:
        raise InvalidInputError(
            f"{scheme}:// needs fsspec: {CLOUD_EXTRA}", source=url
        ) from None
    try:
        impl = fsspec.filesystem(scheme, **{k: _loose(v) for k, v in opts.items()})
    except ValueError as exc:  # fsspec: "Protocol not known"
        raise InvalidInputError(f"unknown storage protocol {scheme}:// ({exc})", source=url) from None
    except ImportError as exc:  # fsspec names the package the protocol needs
        raise InvalidInputError(f"{scheme}:// needs a package that is not installed ({exc})", source=url) from None
    path = impl._strip_protocol(url)
    return Location(url, pafs.PyFileSystem(pafs.FSSpecHandler(impl)), path, f"{scheme}://")


# -- errors ---------------------------------------------------------------------------------

def _first_line(exc) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _bucket(loc: Location) -> str | None:
    """The bucket of an object-store location (None where there is no such thing)."""
    if loc.fs.type_name in ("s3", "gcs"):
        return loc.path.split("/", 1)[0]
    return None


def explain(exc: BaseException, loc: Location, doing: str = "") -> InvalidInputError:
    """``exc`` (raised by ``loc.fs``) as one line naming the URL and what went wrong."""
    text = str(exc)
    up = text.upper()
    bucket = _bucket(loc)
    if "NO_SUCH_BUCKET" in up or "NOSUCHBUCKET" in up or re.search(r"bucket '[^']*' not found", text, re.I):
        reason = f"bucket {bucket!r} does not exist" if bucket else "no such bucket"
    elif isinstance(exc, PermissionError) or any(
        s in up for s in ("ACCESS_DENIED", "ACCESSDENIED", "INVALID_ACCESS_KEY_ID", "SIGNATURE_DOES_NOT_MATCH",
                          "FORBIDDEN", "PERMISSION DENIED", "UNAUTHORIZED", "EXPIRED_TOKEN")
    ):
        reason = f"access denied ({_aws_code(text) or _first_line(exc)}); check the credentials and the permissions on it"
    elif isinstance(exc, ConnectionError) or any(
        s in up for s in ("NETWORK_CONNECTION", "CURLCODE", "COULD NOT CONNECT", "COULD NOT RESOLVE",
                          "CONNECTION REFUSED", "FAILED TO CONNECT", "TIMED OUT", "UNREACHABLE")
    ):
        reason = f"cannot reach the storage endpoint {loc.endpoint} ({_curl_detail(text) or _first_line(exc)})"
    elif isinstance(exc, FileNotFoundError) or "PATH DOES NOT EXIST" in up or "NO_SUCH_KEY" in up:
        reason = "no such object"
    else:
        reason = _first_line(exc)
    if doing:
        reason = f"{doing}: {reason}"
    return InvalidInputError(reason, source=loc.url)


def _aws_code(text: str) -> str:
    m = re.search(r"AWS Error (\w+)", text)
    return m.group(1) if m else ""


def _curl_detail(text: str) -> str:
    m = re.search(r"Details: ([^\n]*)", text)
    return m.group(1).strip() if m else ""


def _info(loc: Location) -> pafs.FileInfo:
    try:
        return loc.fs.get_file_info(loc.path.rstrip("/") or loc.path)
    except (OSError, pa.ArrowException) as exc:
        raise explain(exc, loc) from None


def _missing(loc: Location) -> InvalidInputError:
    """Why ``loc`` is not there: its bucket is missing, or the key is."""
    if _bucket_missing(loc):
        return InvalidInputError(f"bucket {_bucket(loc)!r} does not exist", source=loc.url)
    return InvalidInputError("no such object or prefix", source=loc.url)


def _bucket_missing(loc: Location) -> bool:
    bucket = _bucket(loc)
    return bool(bucket) and _info(Location(loc.url, loc.fs, bucket, loc.endpoint)).type == pafs.FileType.NotFound


# -- inputs ---------------------------------------------------------------------------------

def _listing(loc: Location, recursive: bool) -> list[pafs.FileInfo]:
    sel = pafs.FileSelector(loc.path.rstrip("/") or loc.path, recursive=recursive, allow_not_found=True)
    try:
        return [i for i in loc.fs.get_file_info(sel) if i.type == pafs.FileType.File]
    except (OSError, pa.ArrowException) as exc:
        raise explain(exc, loc) from None


def is_hidden(name: str) -> bool:
    """A name that starts with . or _: a temporary or bookkeeping file or folder
    (``_SUCCESS``, Spark's ``_temporary/``, ``.ipynb_checkpoints/``, ``.part.tmp``). Every
    engine skips such a name, file or folder, at any depth below what the user named."""
    return name.startswith((".", "_"))


def _hidden(rel: str) -> bool:
    """Some segment of the relative path ``rel`` is hidden (``is_hidden``)."""
    return any(is_hidden(part) for part in rel.split("/") if part)


def has_wildcard(text: str) -> bool:
    return any(ch in text for ch in _WILDCARDS)


def segment_matches(name: str, pat: str) -> bool:
    """One path segment ``name`` against one pattern segment ``pat`` (``fnmatch``, case
    sensitive). A hidden name (``is_hidden``) is matched by a wildcard only when ``pat``
    itself starts with . or _ (``_tmp*`` asks for such names, ``*`` does not); a segment
    spelled out literally matches itself, hidden or not."""
    if not has_wildcard(pat):
        return name == pat
    return (not is_hidden(name) or is_hidden(pat)) and fnmatch.fnmatchcase(name, pat)


def expand(url: str, storage_options: dict | None = None, extensions=()) -> list[Location]:
    """The input files ``url`` names: an object as it is (even with wildcard characters in its
    key), a prefix ("directory") as its data files (recursively, sorted, skipping every name,
    file or folder, that starts with . or _: ``is_hidden``), a glob as its sorted matches
    (``*`` and ``?`` stay within one path segment, ``**`` spans any number; a wildcard never
    matches a hidden name, ``segment_matches``)."""
    loc = resolve(url, storage_options)
    info = _info(loc)
    if info.type == pafs.FileType.File and not url.endswith("/"):
        return [loc]
    if info.type == pafs.FileType.Directory:
        base = loc.path.rstrip("/")
        found = [
            loc.child(i.path) for i in sorted(_listing(loc, True), key=lambda i: i.path)
            if i.path.lower().endswith(tuple(extensions) or ("",)) and not _hidden(i.path[len(base):])
        ]
        if not found:
            what = "/".join(extensions) if extensions else "data"
            raise InvalidInputError(f"prefix holds no {what} files", source=url)
        return found
    if has_wildcard(loc.path):
        return _glob(loc)
    raise _missing(loc)


def _glob(loc: Location) -> list[Location]:
    pattern = loc.path
    first = min(pattern.index(ch) for ch in _WILDCARDS if ch in pattern)
    base = pattern[:first].rsplit("/", 1)[0] if "/" in pattern[:first] else ""
    if not base:
        raise InvalidInputError("a wildcard in the bucket name is not supported", source=loc.url)
    below = pattern[len(base) + 1:].split("/")
    recursive = len(below) > 1 or "**" in below
    listed = _listing(Location(loc.url, loc.fs, base, loc.endpoint), recursive)
    found = sorted(
        (i.path for i in listed if _match(i.path[len(base) + 1:].split("/"), below)),
    )
    if not found:
        if not listed and _bucket_missing(loc):
            raise InvalidInputError(f"bucket {_bucket(loc)!r} does not exist", source=loc.url)
        raise InvalidInputError("no object matches this pattern", source=loc.url)
    head = loc.url[: len(loc.url) - len(pattern)] if loc.url.endswith(pattern) else None
    return [
        Location(head + p, loc.fs, p, loc.endpoint) if head is not None else loc.child(p)
        for p in found
    ]


def _match(parts: list[str], pats: list[str]) -> bool:
    """``segment_matches`` segment by segment; a ``**`` segment matches zero or more
    segments, none of them hidden."""
    if not pats:
        return not parts
    if pats[0] == "**":
        return any(_match(parts[i:], pats[1:]) for i in range(len(parts) + 1) if not any(map(is_hidden, parts[:i])))
    return bool(parts) and segment_matches(parts[0], pats[0]) and _match(parts[1:], pats[1:])


def open_input(loc: Location) -> pa.NativeFile:
    """A random-access file for ``loc``: reads are ranged requests (nothing is downloaded
    whole); the Parquet reader on top of it reads through a buffered stream."""
    try:
        return loc.fs.open_input_file(loc.path)
    except (OSError, pa.ArrowException) as exc:
        err = explain(exc, loc)
        if err.reason == "no such object":
            raise _missing(loc) from None
        raise err from None


# -- outputs --------------------------------------------------------------------------------

class RemoteOutput:
    """An output object written under a temporary key beside the target
    (``.NAME.tmp-XXXXXXXX``) and moved to the target by ``commit`` only when complete, so a
    reader never sees a partial object; ``abort`` (any failure, Ctrl-C) deletes the temporary
    object. An existing target is refused without ``overwrite``, an input always.

    Object stores have no atomic no-replace rename: the target is checked when the writer is
    made and again just before the move (a writer racing in between is not detected).
    """

    def __init__(self, url: str, storage_options=None, overwrite: bool = False, inputs=()):
        self.loc = resolve(url, storage_options)
        self.overwrite = overwrite
        path = self.loc.path
        if not path.strip("/") or path.endswith("/") or "/" not in path.strip("/") and _bucket(self.loc):
            raise InvalidInputError("the output must name an object, not a bucket or a prefix", source=url)
        for src in inputs:
            if isinstance(src, Location) and src.key() == self.loc.key():
                raise InvalidInputError("is also an input; write the scores to another object", source=url)
        self._check_target()
        parent, name = path.rsplit("/", 1)
        self.tmp = f"{parent}/.{name}.tmp-{uuid.uuid4().hex[:8]}"
        self._stream = None

    def _check_target(self) -> None:
        info = _info(self.loc)
        if info.type == pafs.FileType.Directory:
            raise InvalidInputError("is a prefix holding objects; name an object", source=self.loc.url)
        if info.type == pafs.FileType.File and not self.overwrite:
            raise InvalidInputError("exists; pass --overwrite to replace it", source=self.loc.url)
        if info.type == pafs.FileType.NotFound and _bucket_missing(self.loc):
            raise InvalidInputError(f"bucket {_bucket(self.loc)!r} does not exist", source=self.loc.url)

    def error(self, exc: BaseException) -> InvalidInputError:
        """An error met while writing, as one line naming the URL."""
        return explain(exc, self.loc, "cannot write")

    def open(self) -> pa.NativeFile:
        """The stream to write the whole object to (the temporary key)."""
        try:
            self._stream = self.loc.fs.open_output_stream(self.tmp)
        except (OSError, pa.ArrowException) as exc:
            raise self.error(exc) from None
        return self._stream

    def commit(self) -> None:
        """Finish the temporary object and move it to the target."""
        try:
            stream, self._stream = self._stream, None
            if stream is not None:
                stream.close()  # the upload completes here
            if not self.overwrite:
                self._check_target()
            try:
                self.loc.fs.move(self.tmp, self.loc.path)
            except (NotImplementedError, pa.ArrowNotImplementedError):
                self.loc.fs.copy_file(self.tmp, self.loc.path)  # stores without rename
                self.loc.fs.delete_file(self.tmp)
        except BaseException as exc:
            self.abort()
            if isinstance(exc, InvalidInputError):
                raise
            if isinstance(exc, (OSError, pa.ArrowException)):
                raise self.error(exc) from None
            raise

    def abort(self) -> None:
        """Remove the temporary object (best effort: an unreachable store keeps what it has,
        which for a failed upload is nothing)."""
        stream, self._stream = self._stream, None
        if stream is not None:
            try:
                stream.close()
            except Exception:  # the object is being thrown away
                pass
        try:
            self.loc.fs.delete_file(self.tmp)
        except Exception:  # never uploaded, or the store went away
            pass


_DATASET_FILES = ("_metadata", "_common_metadata")


def _dataset_part(name: str) -> bool:
    return name in _DATASET_FILES or (name.startswith("part.") and name.endswith(".parquet"))


class RemoteDataset:
    """A Parquet dataset prefix (``--engine dask`` to a URL): the part files are written under
    a temporary prefix beside the target (``.NAME.tmp-XXXXXXXX/``) and moved to the target by
    ``commit`` only when every partition succeeded; ``abort`` deletes the temporary prefix.

    Object stores cannot rename a prefix: the parts are moved one by one, so a reader listing
    the target during those moves may see part of the dataset (never a partial part file).
    ``overwrite`` replaces only a prefix that holds nothing but part files; old parts that no
    new part replaced are deleted after the moves.
    """

    def __init__(self, url: str, storage_options=None, overwrite: bool = False, inputs=()):
        self.loc = resolve(url, storage_options)
        self.fs = self.loc.fs
        path = self.path = self.loc.path.rstrip("/")
        if not path or "/" not in path and _bucket(self.loc):
            raise InvalidInputError("the output must name a prefix inside a bucket, not a bucket", source=url)
        for src in inputs:
            if isinstance(src, Location) and src.key()[:2] == self.loc.key()[:2] and (
                src.path == path or src.path.startswith(path + "/")
            ):
                raise InvalidInputError(f"holds the input {src.url}; write the scores elsewhere", source=url)
        info = _info(self.loc)
        if info.type == pafs.FileType.File:
            raise InvalidInputError("is an object; --engine dask writes a prefix of part files", source=url)
        self._old = []
        if info.type == pafs.FileType.Directory:
            self._old = [i.path for i in _listing(Location(url, self.fs, path, self.loc.endpoint), True)]
            if self._old and not overwrite:
                raise InvalidInputError("exists; pass --overwrite to replace it", source=url)
            if any(not _dataset_part(p[len(path) + 1:]) for p in self._old):
                raise InvalidInputError(
                    "holds more than the part files xent score writes; it is not replaced, even with "
                    "--overwrite (remove it yourself or choose another name)", source=url)
        elif _bucket_missing(self.loc):
            raise InvalidInputError(f"bucket {_bucket(self.loc)!r} does not exist", source=url)
        parent, _, name = path.rpartition("/")
        self.tmp = f"{parent}/.{name}.tmp-{uuid.uuid4().hex[:8]}" if parent else f".{name}.tmp-{uuid.uuid4().hex[:8]}"

    def commit(self) -> None:
        """Move every finished part from the temporary prefix to the target."""
        try:
            tmp_loc = Location(self.loc.url, self.fs, self.tmp, self.loc.endpoint)
            moved = set()
            for p in sorted(i.path for i in _listing(tmp_loc, True)):
                moved.add(f"{self.path}/{p[len(self.tmp) + 1:]}")
                self.fs.move(p, f"{self.path}/{p[len(self.tmp) + 1:]}")  # replaces an old part of that name
            for old in self._old:
                if old not in moved:
                    self.fs.delete_file(old)
        except (OSError, pa.ArrowException) as exc:
            self.abort()
            raise explain(exc, self.loc, "cannot write") from None
        self.abort()  # what is left of the temporary prefix (a directory marker)

    def abort(self) -> None:
        """Delete the temporary prefix (best effort)."""
        try:
            self.fs.delete_dir(self.tmp)
        except Exception:  # never created, or the store went away
            pass
