"""Files in and out: ``inputs`` (which files INPUT names), ``readers`` (one file's batches),
``formats`` (output formats, CSV and JSON Lines text), ``outputs`` (checks before any work,
the temporary file and its atomic rename), ``signals`` (Ctrl-C, SIGTERM, SIGHUP).

The names below are the package's: ``io.Source``, ``io.check_output``, ...
"""

from .formats import (  # noqa: F401
    FORMAT_CHOICES,
    FORMATS,
    TEXT_ROWS,
    Csv,
    JsonLines,
    WholeWrites,
    csv_unwritable,
    is_number,
    output_format,
    parquet_compression,
    write_all,
)
from .inputs import (  # noqa: F401
    INPUT_EXT,
    IPC_EXT,
    PARQUET_EXT,
    expand_inputs,
)
from .outputs import (  # noqa: F401
    STDOUT,
    WRITE_BYTES,
    WRITE_ROWS,
    AtomicWriter,
    check_output,
    is_special,
    is_stdout,
    looks_like_dataset,
    rename_into_place,
    temp_name,
    write_error,
    write_text,
)
from .readers import (  # noqa: F401
    CHANGED,
    DECODE_AHEAD,
    MAX_MAPPED,
    PARQUET_BUFFER_BYTES,
    RELEASE_BEHIND,
    Source,
    distinct_schemas,
    file_identity,
    plan_sources,
)
from .signals import (  # noqa: F401
    HANDLED_SIGNALS,
    REPEAT_GRACE_S,
    Interrupted,
    check_interrupted,
    deferred_signals,
    ignore_signals,
    install_signal_handlers,
    output_in_place,
)
