"""Errors that users can cause, with a message that says where the problem is.

Every error a user's data or configuration can trigger is a `RecsysError`; the CLI prints its
message on one line and exits non-zero instead of showing a stack trace.
"""

from __future__ import annotations


class RecsysError(Exception):
    """Base class for problems the user can fix (bad data, bad config, missing files)."""


class DataError(RecsysError):
    """Bad input data, located by file, column and first offending row.

    `row` is the 1-based data row (the header is not counted), so in a CSV with a header it sits on
    line `row + 1`; that is spelled out in the message because people open CSVs in editors.
    """

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        column: str | None = None,
        row: int | None = None,
        count: int | None = None,
    ) -> None:
        self.file = file
        self.column = column
        self.row = row
        self.count = count
        self.reason = message
        super().__init__(self._format())

    def _format(self) -> str:
        where: list[str] = []
        if self.file:
            where.append(str(self.file))
        if self.column:
            where.append(f"column '{self.column}'")
        if self.row is not None:
            where.append(f"row {self.row}")
        text = self.reason
        if self.count is not None and self.count > 1:
            text += f" ({self.count} rows affected; first shown)"
        return f"{', '.join(where)}: {text}" if where else text


class ConfigError(RecsysError):
    """A configuration value or command-line option that cannot work."""
