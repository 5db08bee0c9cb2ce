"""`executor wait ID` and `executor submit ... --wait`: block until the execution has ended.

For scripts, the exit code is the outcome: 0 SUCCESS, 1 PERMANENT_FAILURE or ABORTED (or no such
execution), 124 when the time given ran out first (as `timeout(1)` says it), 2 bad usage. The
outcome is printed on stdout (with `--json`, the execution as `executor get --json` prints it);
a timeout's message, naming the phase the execution was left in, on stderr.
"""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING, Any

from executor import cli

if TYPE_CHECKING:  # imported where used: registering the commands must not load the store
    from executor.client import Client
    from executor.core.records import ExecutionRecord
    from executor.settings import Settings

#: The exit code of a wait whose time ran out, as GNU `timeout` has it.
TIMED_OUT = 124


def add_commands(commands: Any, as_json: argparse.ArgumentParser) -> None:
    wait = commands.add_parser(
        "wait",
        parents=[as_json],
        help="wait until an execution has ended; exit 0 on SUCCESS, 1 on failure, 124 on timeout",
    )
    wait.add_argument("id")
    wait.add_argument("--timeout", metavar="DURATION", help="give up after this long (default: never)")
    wait.set_defaults(command=_wait)


def add_submit_options(submit: argparse.ArgumentParser) -> None:
    submit.add_argument(
        "--wait",
        action="store_true",
        help="wait until the execution has ended and print its outcome (exit codes as `executor wait`)",
    )
    submit.add_argument("--wait-timeout", metavar="DURATION", help="with --wait: give up after this long")


def checked_timeout(text: str | None, option: str) -> float | None:
    """A wait's timeout, refused before anything is submitted or waited for (exit 2)."""
    from executor.client import SubmissionError, wait_seconds

    try:
        return wait_seconds(text)
    except SubmissionError as err:
        raise cli.CommandError(f"{option}: {err}", cli.USAGE) from None


async def wait_and_print(client: Client, execution_id: str, within: float | None, as_json: bool) -> int:
    """Wait, print the outcome, and return the exit code that says it."""
    from executor.client import ExecutionNotFoundError, WaitTimeoutError
    from executor.core import Phase
    from executor.views import execution_dict

    try:
        record = await client.wait(execution_id, timeout=within)
    except ExecutionNotFoundError as err:
        raise cli.CommandError(str(err)) from None
    except WaitTimeoutError as err:
        raise cli.CommandError(str(err), TIMED_OUT) from None
    if as_json:
        print(json.dumps(execution_dict(record)))
    else:
        _print_outcome(record)
    return cli.OK if record.phase is Phase.SUCCESS else cli.REFUSED


def _print_outcome(record: ExecutionRecord) -> None:
    print(f"{record.id} {record.phase.name}")
    if record.reason:
        print(f"{'reason':<16}{record.reason}")
    if record.error is not None:
        print(f"{'error':<16}{record.error.code} ({record.error.kind.value}): {record.error.message}")
    print(f"{'attempt':<16}{record.attempt} of {record.max_attempts}")
    if record.outputs is not None:
        print(f"{'outputs':<16}{json.dumps(record.outputs)}")


def _wait(args: argparse.Namespace, settings: Settings) -> int:
    timeout = checked_timeout(args.timeout, "--timeout")

    async def body(client: Client) -> int:
        return await wait_and_print(client, args.id, timeout, args.json)

    return cli._with_client(settings, body)
