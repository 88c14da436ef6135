"""The one exception users catch."""

from __future__ import annotations


class InvalidInputError(ValueError):
    """Bad input: names the row (0-based, when one row is at fault), the column and the reason.

    Attributes: ``row`` (int or None), ``column`` ("pred", "target" or None), ``reason``
    (short text), ``status`` (the kernel status code or None), ``n_invalid`` (how many rows
    were invalid in the call, when known), ``counted`` (None when ``n_invalid`` counts every
    row of the call; else where the count stopped, e.g. "counted in the batch that stopped
    the run": then ``n_invalid`` is a lower bound and the message says "at least").
    """

    def __init__(
        self, reason, *, row=None, column=None, status=None, n_invalid=None, detail="", source=None,
        counted=None,
    ):
        self.reason = reason
        self.source = source
        self.row = row
        self.column = column
        self.status = status
        self.n_invalid = n_invalid
        self.detail = detail
        self.counted = counted
        super().__init__(self._message())

    def _fields(self) -> dict:
        return dict(row=self.row, column=self.column, status=self.status,
                    n_invalid=self.n_invalid, detail=self.detail, source=self.source, counted=self.counted)

    def __reduce__(self):  # keep the attributes when raised in a Dask worker
        return _rebuild, (self.reason, self._fields())

    def _message(self) -> str:
        where = []
        if self.row is not None:
            where.append(f"row {self.row}")
        if self.column:
            where.append(f"column {self.column!r}")
        head = ", ".join(where)
        if self.source:
            head = f"{self.source}: {head}" if head else str(self.source)
        msg = f"{head}: {self.reason}" if head else self.reason
        if self.detail:
            msg += f" ({self.detail})"
        if self.n_invalid and self.n_invalid > 1:
            if self.counted:
                msg += f"; at least {self.n_invalid} invalid rows ({self.counted})"
            else:
                msg += f"; {self.n_invalid} invalid rows in total"
        return msg

    def moved(self, *, row_offset=0, column=None, source=None, counted=None) -> InvalidInputError:
        """A copy re-addressed: rows shifted by ``row_offset`` (to global row numbers), the
        column renamed to the user's name, the source file set, where the invalid-row count
        stopped (each when given)."""
        kw = self._fields()
        if self.row is not None:
            kw["row"] = self.row + row_offset
        kw["column"] = column or self.column
        kw["source"] = source or self.source
        kw["counted"] = counted or self.counted
        return InvalidInputError(self.reason, **kw)


    def counted_in_full(self) -> InvalidInputError:
        """A copy whose invalid-row count is known to cover every row ("in total")."""
        kw = self._fields()
        kw["counted"] = None
        return InvalidInputError(self.reason, **kw)


def _rebuild(reason, kw):
    return InvalidInputError(reason, **kw)
