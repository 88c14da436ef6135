"""The one exception users catch."""

from __future__ import annotations


class InvalidInputError(ValueError):
    """Bad input: names the row (0-based, when one row is at fault), the column and the reason.

    Attributes: ``row`` (int or None), ``column`` ("pred", "target" or None), ``reason``
    (short text), ``status`` (the kernel status code or None), ``n_invalid`` (how many rows
    were invalid in the call, when known).
    """

    def __init__(
        self, reason, *, row=None, column=None, status=None, n_invalid=None, detail="", source=None
    ):
        self.reason = reason
        self.source = source
        self.row = row
        self.column = column
        self.status = status
        self.n_invalid = n_invalid
        self.detail = detail
        super().__init__(self._message())

    def __reduce__(self):  # keep the attributes when raised in a Dask worker
        kw = dict(row=self.row, column=self.column, status=self.status,
                  n_invalid=self.n_invalid, detail=self.detail, source=self.source)
        return _rebuild, (self.reason, kw)

    def _message(self, row_offset=0, column_name=None):
        parts = [str(self.source)] if self.source else []
        if self.row is not None:
            parts.append(f"row {self.row + row_offset}")
        col = column_name or self.column
        if col:
            parts.append(f"column {col!r}")
        head = ", ".join(parts[1:] if self.source else parts)
        if self.source:
            head = f"{parts[0]}: {head}" if head else str(parts[0])
        msg = f"{head}: {self.reason}" if head else self.reason
        if self.detail:
            msg += f" ({self.detail})"
        if self.n_invalid and self.n_invalid > 1:
            msg += f"; {self.n_invalid} invalid rows in total"
        return msg

    def with_context(self, *, row_offset=0, column_name=None):
        """The same message with a global row number and the user's column name."""
        return self._message(row_offset, column_name)


def _rebuild(reason, kw):
    return InvalidInputError(reason, **kw)
