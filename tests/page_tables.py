"""The pages' stacked tables (``class="table stack"``), read from the HTML a page answers.

On a narrow screen such a table shows each row as lines of "column: value", the column's name
coming from the cell's ``data-label``: a cell without it (or with another column's name) shows a
value nobody can place. Action cells (their header is ``actions-col``) need no label.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from html.parser import HTMLParser


@dataclass
class StackedTable:
    testid: str
    headers: list[tuple[str, bool]] = field(default_factory=list)  # (text, is an action column)
    rows: list[list[str | None]] = field(default_factory=list)  # each cell's data-label


class _Reader(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tables: list[StackedTable] = []
        self._table: StackedTable | None = None
        self._header: list[str] | None = None  # the text of the <th> being read

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        classes = (values.get("class") or "").split()
        if tag == "table" and "stack" in classes:
            self._table = StackedTable(testid=values.get("data-testid") or "")
            self.tables.append(self._table)
        elif self._table is None:
            return
        elif tag == "th":
            self._header = []
            self._table.headers.append(("", "actions-col" in classes))
        elif tag == "tr" and self._table.headers:
            self._table.rows.append([])
        elif tag == "td" and self._table.rows:
            self._table.rows[-1].append(values.get("data-label"))

    def handle_data(self, data: str) -> None:
        if self._header is not None:
            self._header.append(data)

    def handle_endtag(self, tag: str) -> None:
        if self._table is None:
            return
        if tag == "th" and self._header is not None:
            _, action = self._table.headers[-1]
            self._table.headers[-1] = (" ".join("".join(self._header).split()), action)
            self._header = None
        elif tag == "table":
            self._table = None


def stacked_tables(content: str) -> dict[str, StackedTable]:
    """The page's stacked tables by their data-testid."""
    reader = _Reader()
    reader.feed(content)
    return {table.testid: table for table in reader.tables}


def mislabelled_cells(table: StackedTable) -> list[str]:
    """Cells whose data-label is not their column's header, as "row n, column: label"."""
    wrong = []
    for number, row in enumerate(table.rows, 1):
        for (header, action), label in zip(table.headers, row, strict=False):
            if not action and label != header:
                wrong.append(f"row {number}, {header}: {label!r}")
    return wrong
