"""`executor pause TYPE`, `executor resume TYPE`, `executor paused`, registered by `executor.cli`."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from executor import cli

if TYPE_CHECKING:  # imported where used: registering the commands must not load the store
    from executor.client import Client
    from executor.settings import Settings
    from executor.store.pauses import PausedTaskType


def add_commands(commands: Any, as_json: argparse.ArgumentParser) -> None:
    submit = commands.choices["submit"]
    submit.add_argument("--queue", help="only replicas serving it run it (default: the plugin's, or default)")
    submit.add_argument(
        "--pin-to-host",
        action="store_true",
        default=None,
        help="run every round on the host of the replica that claims it first",
    )

    pause = commands.add_parser(
        "pause", parents=[as_json], help="hold back a task type's executions on every replica"
    )
    pause.add_argument("task_type", metavar="TYPE")
    pause.add_argument("--reason", help="shown by `executor paused` and the dashboard")
    pause.set_defaults(command=_pause)

    resume = commands.add_parser("resume", parents=[as_json], help="let a paused task type run again")
    resume.add_argument("task_type", metavar="TYPE")
    resume.set_defaults(command=_resume)

    listing = commands.add_parser("paused", parents=[as_json], help="the paused task types")
    listing.set_defaults(command=_paused)


def _run(settings: Settings, body: Any, *, with_plugins: bool) -> int:
    import anyio

    from executor.app.parts import connect, task_types

    async def go() -> int:
        client = await connect(settings, task_types=task_types(settings) if with_plugins else None)
        try:
            result: int = await body(client)
            return result
        finally:
            await client.close()

    return anyio.run(go)


def _pause(args: argparse.Namespace, settings: Settings) -> int:
    from executor.client import SubmissionError

    async def body(client: Client) -> int:
        try:
            changed = await client.pause(args.task_type, args.reason)
        except SubmissionError as err:
            raise cli.CommandError(f"pause refused: {err}") from None
        _say(args, changed, "paused" if changed else "already paused")
        return cli.OK

    return _run(settings, body, with_plugins=True)


def _resume(args: argparse.Namespace, settings: Settings) -> int:
    from executor.client import SubmissionError

    async def body(client: Client) -> int:
        try:
            changed = await client.resume(args.task_type)
        except SubmissionError as err:
            raise cli.CommandError(f"resume refused: {err}") from None
        _say(args, changed, "resumed" if changed else "not paused")
        return cli.OK

    return _run(settings, body, with_plugins=True)


def _say(args: argparse.Namespace, changed: bool, message: str) -> None:
    if args.json:
        cli._print_json({"task_type": args.task_type, "changed": changed, "message": message})
    else:
        print(f"{args.task_type}: {message}")


def _paused(args: argparse.Namespace, settings: Settings) -> int:
    from executor.queues.views import paused_dict

    async def body(client: Client) -> int:
        rows = [paused_dict(row) for row in await client.paused()]
        if args.json:
            cli._print_json(rows)
            return cli.OK
        print(f"{'TASK TYPE':<30}{'PAUSED AT':<34}REASON")
        for row in rows:
            print(f"{row['task_type']:<30}{row['paused_at'] or '-':<34}{row['reason'] or ''}")
        return cli.OK

    return _run(settings, body, with_plugins=False)


def paused_task_types(settings: Settings) -> dict[str, PausedTaskType] | None:
    """The paused task types, for `executor plugins`; None when the database does not answer or is
    not migrated (the plugins are still listed: they come from the plugin modules). Listing plugins
    creates no database and migrates none: a SQLite file that does not exist has nothing paused."""
    import anyio

    from executor.app.parts import connect
    from executor.client import SchemaError
    from executor.store import StoreUnavailable
    from executor.store.sqlite import database_missing

    if database_missing(settings.database_url):
        return {}

    async def go() -> dict[str, PausedTaskType]:
        client = await connect(settings, migrate=False)
        try:
            return {row.task_type: row for row in await client.paused()}
        finally:
            await client.close()

    try:
        return anyio.run(go)
    except (StoreUnavailable, SchemaError):
        return None
