"""`executor submit TYPE --from FILE|-`: a batch from JSON lines, stored all or nothing.

Each non-blank line is one JSON object with what `POST /api/v1/executions` takes (`inputs` and
the options; `task_type` defaults to TYPE); row N is the N-th non-blank line. The rows are
checked by the client (`executor.bulk`) before any is stored; the ids are printed in row order.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from executor import cli
from executor.bulk import Row, RowProblem
from executor.client import Client, SubmissionError
from executor.settings import Settings

#: The single submission's options, with their defaults: `--from` takes them from each row.
_ROW_OPTIONS = {
    "inputs": "{}",
    "label": [],
    "priority": 0,
    "max_attempts": None,
    "timeout": None,
    "deadline": None,
    "not_before": None,
    "idempotency_key": None,
    "backoff_base": None,
    "backoff_max": None,
}


def submit_from(args: argparse.Namespace, settings: Settings) -> int:
    given = [name for name, default in _ROW_OPTIONS.items() if getattr(args, name) != default]
    if given:
        flag = "--" + given[0].replace("_", "-")
        raise cli.CommandError(
            f"{flag} cannot be given with --from: each row carries its own options", cli.USAGE
        )
    rows = read_rows(args.from_file)

    async def body(client: Client) -> int:
        try:
            ids = await client.submit_many(rows, task_type=args.task_type)
        except SubmissionError as err:
            raise cli.CommandError(f"submission refused: {err}") from None
        if args.json:
            cli._print_json({"ids": ids})
        else:
            sys.stdout.write("".join(f"{execution_id}\n" for execution_id in ids))
        return cli.OK

    return cli._with_client(settings, body, with_plugins=True)


def read_rows(source: str) -> list[Row]:
    """The rows of a JSON-lines file (`-`: standard input); a line that is not JSON becomes the
    problem of its row, reported with the others'."""
    try:
        if source == "-":
            lines = sys.stdin.read().splitlines()
        else:
            with open(source, encoding="utf-8") as file:
                lines = file.read().splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise cli.CommandError(f"--from {source}: {err}", cli.USAGE) from None
    rows: list[Row] = []
    for line in lines:
        if not line.strip():
            continue
        try:
            row: Any = json.loads(line)
        except RecursionError:
            row = RowProblem(len(rows) + 1, None, "nested too deeply to read")
        except ValueError as err:
            row = RowProblem(len(rows) + 1, None, f"not valid JSON: {err}")
        rows.append(row)
    return rows
