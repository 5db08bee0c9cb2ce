"""The command line's tables, through rich: cells wrap inside their column, so a multi-line or long
value (an error message, a reason) never breaks the table's rows.

Colour and bold only on a terminal (rich looks, and honours NO_COLOR); piped output is plain text
whose first line is the header and whose rows start at the left edge, with continuation lines of a
wrapped cell indented under their column. `--json` does not come here. Values are shown as text,
never as rich markup, and control characters in them are dropped.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console

#: Width of piped output when COLUMNS does not say: wide enough that ids and times stay on one line.
PIPED_WIDTH = 200


@dataclass(frozen=True, slots=True)
class Column:
    header: str
    #: Ids, phases and times are never wrapped; free text (reasons, messages) is.
    wrap: bool = False


def print_table(columns: Sequence[Column], rows: Iterable[Sequence[object]]) -> None:
    from rich.table import Table
    from rich.text import Text

    table = Table(box=None, show_edge=False, pad_edge=False, header_style="bold", padding=(0, 2, 0, 0))
    for column in columns:
        table.add_column(column.header, no_wrap=not column.wrap, overflow="fold")
    for row in rows:
        table.add_row(*(Text(_text(cell)) for cell in row))
    _print(table)


def print_fields(pairs: Iterable[tuple[str, object]]) -> None:
    """`executor get`: one field a line, the value wrapped in its own column."""
    from rich.table import Table
    from rich.text import Text

    grid = Table.grid(padding=(0, 2, 0, 0))
    grid.add_column(no_wrap=True)
    grid.add_column(overflow="fold")
    for key, value in pairs:
        grid.add_row(Text(key), Text(_text(value)))
    _print(grid)


def _text(value: object) -> str:
    return "-" if value is None else str(value)


def _print(renderable: object) -> None:
    """Rendered, then written without the spaces rich pads each line with to the table's width."""
    console = _console()
    with console.capture() as captured:
        console.print(renderable)
    sys.stdout.write("".join(line.rstrip() + "\n" for line in captured.get().splitlines()))


def _console() -> Console:
    from rich.console import Console

    width = None
    if not sys.stdout.isatty():
        columns = os.environ.get("COLUMNS", "")
        width = int(columns) if columns.isdigit() and int(columns) > 0 else PIPED_WIDTH
    return Console(width=width, highlight=False, soft_wrap=False)
