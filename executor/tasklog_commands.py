"""`executor logs ID [--follow]`: an execution's log file (see `executor.tasklogs`), registered by
`executor.cli`. Reads the file on this host, where the plugin that keeps one (`shell`) runs."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

from executor import cli

if TYPE_CHECKING:
    from executor.client import Client
    from executor.settings import Settings


def add_commands(commands: Any, as_json: argparse.ArgumentParser) -> None:
    logs = commands.add_parser("logs", help="an execution's output log (e.g. of a shell command)")
    logs.add_argument("id")
    logs.add_argument(
        "--follow", "-f", action="store_true", help="keep printing what is written until the execution ends"
    )
    logs.add_argument(
        "--interval", type=float, default=0.5, help="seconds between looks when following (default 0.5)"
    )
    logs.set_defaults(command=_logs)


def _logs(args: argparse.Namespace, settings: Settings) -> int:
    import anyio

    from executor.tasklogs import NoLogError, log_path, read_log

    if not args.interval > 0:
        raise cli.CommandError("--interval must be more than 0", cli.USAGE)

    async def body(client: Client) -> int:
        offset, current = 0, None
        out = sys.stdout.buffer
        while True:
            record = await client.get(args.id)
            if record is None:
                raise cli.CommandError(f"no execution with id {args.id}")
            try:
                path = log_path(record)
                if path != current:  # a new attempt writes a new file
                    offset, current = 0, path
                while True:  # everything written so far, a chunk at a time
                    chunk = read_log(path, offset)
                    if chunk.next_offset == offset:
                        break
                    out.write(chunk.data)
                    out.flush()
                    offset = chunk.next_offset
            except NoLogError as err:
                if not args.follow or record.phase.is_final:
                    raise cli.CommandError(str(err)) from None
            if not args.follow or (record.phase.is_final and record.finalized):
                return cli.OK
            await anyio.sleep(args.interval)

    return cli._with_client(settings, body)
