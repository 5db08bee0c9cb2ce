"""The `executor` command line.

Exit codes mean something to scripts: 0 done, 1 not found or refused (nothing was changed),
2 bad usage or invalid settings; `wait` and `submit --wait` exit 1 on a failed execution and 124
when their time ran out (see cli_wait.py). `--json` prints machine-readable output on stdout; errors go to
stderr as one line starting with `executor:`.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, NoReturn

from executor import __version__

if TYPE_CHECKING:
    from executor.client import Client
    from executor.core import Phase
    from executor.settings import Settings

# What a command needs is imported inside it, not here: `executor --help`, `get`, `list`, `events`
# and `submit` must start quickly (tests/test_cli_speed.py holds the figure), and most commands
# need neither the plugins, nor the daemon, nor Alembic.

OK, REFUSED, USAGE = 0, 1, 2


class CommandError(Exception):
    def __init__(self, message: str, code: int = REFUSED) -> None:
        super().__init__(message)
        self.code = code


def main(argv: Sequence[str] | None = None) -> NoReturn:
    # Whatever a stored row holds (a lone surrogate, say) is printed escaped, never a traceback.
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, io.TextIOWrapper):
            stream.reconfigure(errors="backslashreplace")
    parser = _parser()
    args = parser.parse_args(argv)
    settings: Settings | None = None
    try:
        from executor.logging import configure_logging
        from executor.settings import load_settings

        settings = load_settings()
        configure_logging(settings.log_level, settings.log_format)
        code = args.command(args, settings)
        sys.stdout.flush()  # here, so that a reader gone away is caught below, not at exit
    except KeyboardInterrupt:
        code = 130
    except BrokenPipeError:
        # The reader went away (`executor list | head`): not an error worth a traceback. Point
        # stdout at /dev/null so that the interpreter's own flush at exit does not fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = OK
    except Exception as err:
        known = _known_failure(err)
        if known is not None:
            code = _fail(*known)
        # The database not answering, however deep in a task group it surfaced: one line naming
        # the setting that points at it (exit 2, as for any setting that cannot work); anything
        # else is a bug, and its traceback is what a report of it needs.
        elif settings is None or not _store_down(err):
            raise
        else:
            code = _fail(_unreachable(settings, err), USAGE)
    sys.exit(code)


def _known_failure(err: Exception) -> tuple[str, int] | None:
    """The one line and exit code of a failure a user can act on; None for anything else.

    The error classes are imported here, once something failed: by then the module that raised
    one is loaded, and a command that succeeds never pays for the others."""
    if isinstance(err, CommandError):
        return str(err), err.code
    from executor.client import SchemaError
    from executor.plugin.loader import PluginLoadError
    from executor.plugin.registry import PluginRegistryError
    from executor.schedules.model import ScheduleError
    from executor.settings import SettingsError
    from executor.store import StoreRefused

    if isinstance(err, SettingsError):
        return str(err), USAGE
    if isinstance(err, PluginLoadError | PluginRegistryError):
        return f"plugins: {err}", USAGE
    if isinstance(err, SchemaError | StoreRefused):
        return str(err), REFUSED
    if isinstance(err, ScheduleError):
        return f"schedules: {err}", USAGE
    return None


def _fail(message: str, code: int) -> int:
    print(f"executor: {message}", file=sys.stderr)
    return code


def _store_down(err: BaseException) -> bool:
    from executor.store import StoreUnavailable

    if isinstance(err, BaseExceptionGroup):
        return all(_store_down(inner) for inner in err.exceptions)
    return isinstance(err, StoreUnavailable)


def _unreachable(settings: Settings, err: BaseException) -> str:
    from executor.store import StoreUnavailable, SubmissionFailed
    from executor.store.base import url_without_password

    while isinstance(err, BaseExceptionGroup):
        err = err.exceptions[0]
    url = url_without_password(settings.database_url)
    if isinstance(err, SubmissionFailed):  # says whether the submission was stored
        return f"the database does not answer (EXECUTOR_DATABASE_URL={url}): {err}"
    cause = err.__cause__ if isinstance(err, StoreUnavailable) and err.__cause__ is not None else err
    detail = str(cause).strip().splitlines()
    return (
        f"the database does not answer (EXECUTOR_DATABASE_URL={url}): "
        f"{type(cause).__name__}{': ' + detail[0] if detail else ''}"
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="executor",
        description="An asyncio task-execution daemon. Settings come from EXECUTOR_* variables and .env.",
    )
    parser.add_argument("--version", action="version", version=f"executor {__version__}")
    commands = parser.add_subparsers(title="commands", required=True, metavar="COMMAND")
    as_json = argparse.ArgumentParser(add_help=False)
    as_json.add_argument("--json", action="store_true", help="machine-readable output")

    run = commands.add_parser("run", help="run the daemon until SIGTERM or SIGINT")
    run.set_defaults(command=_run)

    submit = commands.add_parser("submit", parents=[as_json], help="submit an execution; prints its id")
    submit.add_argument("task_type", metavar="TYPE")
    submit.add_argument("--inputs", default="{}", metavar="JSON", help="a JSON object (default {})")
    submit.add_argument("--label", action="append", default=[], metavar="KEY=VALUE")
    submit.add_argument("--priority", type=int, default=0)
    submit.add_argument("--max-attempts", type=int, default=None)
    # Durations go to the client as written: it parses and refuses them as for every other door.
    submit.add_argument("--timeout", metavar="DURATION", help="per attempt, from its first round")
    submit.add_argument("--deadline", metavar="DURATION", help="for the whole execution")
    submit.add_argument(
        "--not-before", type=_when, metavar="TIME", help="ISO 8601 time, or a delay such as 10m"
    )
    submit.add_argument(
        "--idempotency-key", metavar="KEY", help="a repeat with this key returns the first id"
    )
    submit.add_argument("--backoff-base", metavar="DURATION")
    submit.add_argument("--backoff-max", metavar="DURATION")
    submit.add_argument(
        "--from",
        dest="from_file",
        metavar="FILE",
        help="many at once: JSON lines, one row each (- for stdin)",
    )
    submit.set_defaults(command=_submit)

    get = commands.add_parser("get", parents=[as_json], help="show one execution")
    get.add_argument("id")
    get.set_defaults(command=_get)

    listing = commands.add_parser("list", parents=[as_json], help="list executions, newest first")
    listing.add_argument("--phase", action="append", default=[], type=_phase, metavar="PHASE")
    listing.add_argument("--task-type")
    listing.add_argument("--unfinalized", action="store_true", help="finished but finalize has not succeeded")
    listing.add_argument("--limit", type=_positive, default=50)
    listing.add_argument(
        "--label", action="append", default=[], metavar="KEY=VALUE", help="only executions with this label"
    )
    listing.set_defaults(command=_list)

    events = commands.add_parser("events", parents=[as_json], help="the timeline of one execution")
    events.add_argument("id")
    events.set_defaults(command=_events)

    abort = commands.add_parser("abort", parents=[as_json], help="ask the daemon to abort an execution")
    abort.add_argument("id")
    abort.add_argument("--reason", default="Aborted by user")
    abort.set_defaults(command=_abort)

    plugins = commands.add_parser(
        "plugins", parents=[as_json], help="the plugins and the task types they handle"
    )
    plugins.set_defaults(command=_plugins)

    migrate = commands.add_parser("migrate", help="bring the database schema up to date")
    migrate.set_defaults(command=_migrate)

    replicas = commands.add_parser(
        "replicas", parents=[as_json], help="the daemons running against this database, from their heartbeats"
    )
    replicas.add_argument("--all", action="store_true", help="also those whose heartbeat went silent")
    replicas.set_defaults(command=_replicas)

    config = commands.add_parser(
        "config", parents=[as_json], help="the effective settings (secrets masked) and where each came from"
    )
    config.set_defaults(command=_config)

    _add_command_modules(commands, as_json, submit)
    return parser


def _add_command_modules(
    commands: Any, as_json: argparse.ArgumentParser, submit: argparse.ArgumentParser
) -> None:
    """The commands that live in modules of their own, each registered by its `add_commands`:
    `executor schedule ...`, `logs`, `retry` / `failures` / `prune`, `wait` and `submit --wait`,
    `pause` / `resume` / `paused` and `submit --queue/--pin-to-host`."""
    from executor import cli_wait
    from executor.history.commands import add_commands as add_history_commands
    from executor.queues.commands import add_commands as add_pause_commands
    from executor.schedules.commands import add_commands as add_schedule_commands
    from executor.tasklog_commands import add_commands as add_log_commands

    add_schedule_commands(commands, as_json)
    add_log_commands(commands, as_json)
    add_history_commands(commands, as_json)
    cli_wait.add_commands(commands, as_json)
    cli_wait.add_submit_options(submit)
    add_pause_commands(commands, as_json)  # `executor pause ...`, and `submit --queue/--pin-to-host`


def _phase(text: str) -> Phase:
    from executor.core import Phase

    try:
        return Phase[text.upper().replace("-", "_")]
    except KeyError:
        raise argparse.ArgumentTypeError(
            f"unknown phase {text!r}; phases: {', '.join(p.name for p in Phase)}"
        ) from None


def _duration(text: str) -> timedelta:
    from executor.core import parse_duration

    try:
        return parse_duration(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _when(text: str) -> datetime:
    """An ISO 8601 time (UTC when it names no zone), or a delay from now such as `10m`."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        try:
            return datetime.now(UTC) + _duration(text)
        except OverflowError:
            raise argparse.ArgumentTypeError(f"{text!r} is too far in the future") from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _with_client(
    settings: Settings, body: Callable[[Client], Awaitable[int]], *, with_plugins: bool = False
) -> int:
    import anyio

    from executor.app.parts import connect, task_types

    async def go() -> int:
        client = await connect(settings, task_types=task_types(settings) if with_plugins else None)
        try:
            return await body(client)
        finally:
            await client.close()

    return anyio.run(go)


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=None, sort_keys=False))


# -- commands ---------------------------------------------------------------------------------


def _run(args: argparse.Namespace, settings: Settings) -> int:
    import anyio

    from executor.daemon import serve

    anyio.run(serve, settings)
    return OK


def _submit(args: argparse.Namespace, settings: Settings) -> int:
    if args.from_file is not None:
        from executor.bulk_commands import submit_from

        return submit_from(args, settings)
    try:
        inputs = json.loads(args.inputs)
    except json.JSONDecodeError as err:
        raise CommandError(f"--inputs is not valid JSON: {err}", USAGE) from None
    if not isinstance(inputs, dict):
        raise CommandError(f"--inputs must be a JSON object, not {type(inputs).__name__}", USAGE)
    labels = {}
    for item in args.label:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise CommandError(f"--label {item!r} is not KEY=VALUE", USAGE)
        labels[key] = value
    from executor.cli_wait import checked_timeout, wait_and_print

    wait_timeout = checked_timeout(args.wait_timeout, "--wait-timeout")  # refused before submitting
    if args.wait_timeout is not None and not args.wait:
        raise CommandError("--wait-timeout needs --wait", USAGE)

    from executor.client import SubmissionError

    async def body(client: Client) -> int:
        try:
            execution_id = await client.submit(
                args.task_type,
                inputs,
                labels=labels,
                priority=args.priority,
                max_attempts=args.max_attempts,
                not_before=args.not_before,
                timeout=args.timeout,
                deadline=args.deadline,
                idempotency_key=args.idempotency_key,
                backoff_base=args.backoff_base,
                backoff_max=args.backoff_max,
                queue=args.queue,
                pin_to_host=args.pin_to_host,
            )
        except SubmissionError as err:
            raise CommandError(f"submission refused: {err}") from None
        if args.wait:
            if not args.json:
                print(execution_id, flush=True)  # before the wait: the id is known at once
            return await wait_and_print(client, execution_id, wait_timeout, args.json)
        if args.json:
            _print_json({"id": execution_id})
        else:
            print(execution_id)
        return OK

    return _with_client(settings, body, with_plugins=True)


def _get(args: argparse.Namespace, settings: Settings) -> int:
    from executor.cli_tables import print_fields
    from executor.views import execution_dict

    async def body(client: Client) -> int:
        record = await client.get(args.id)
        if record is None:
            raise CommandError(f"no execution with id {args.id}")
        data = execution_dict(record)
        if args.json:
            _print_json(data)
            return OK
        fields: list[tuple[str, object]] = [
            (key, data[key]) for key in ("id", "task_type", "phase", "phase_version", "reason", "attempt")
        ]
        fields.append(("max_attempts", data["max_attempts"]))
        if record.error:
            fields.append(
                ("error", f"{record.error.code} ({record.error.kind.value}): {record.error.message}")
            )
        for key in (
            "created_at",
            "updated_at",
            "finished_at",
            "finalized",
            "finalize_error",
            "priority",
            "timeout",
            "deadline",
            "deadline_at",
            "not_before",
            "idempotency_key",
            "queue",
            "pin_to_host",
            "pinned_host",
            "backoff_base",
            "backoff_max",
            "labels",
            "inputs",
            "outputs",
        ):
            value = data[key]
            if key in _SECONDS and value is not None:
                value = f"{value:g}s"
            fields.append((key, json.dumps(value) if isinstance(value, dict | list) else value))
        print_fields(fields)
        return OK

    return _with_client(settings, body)


#: Fields of an execution that are durations in seconds: shown with their unit.
_SECONDS = frozenset({"timeout", "deadline", "backoff_base", "backoff_max"})


def _list(args: argparse.Namespace, settings: Settings) -> int:
    from executor.cli_tables import Column, print_table
    from executor.client import SubmissionError
    from executor.views import execution_dict, iso

    async def body(client: Client) -> int:
        try:
            records = await client.list_executions(
                phases=args.phase,
                task_type=args.task_type,
                unfinalized=args.unfinalized,
                limit=args.limit,
                labels=label_filter(args.label),
            )
        except SubmissionError as err:
            raise CommandError(str(err), USAGE) from None
        if args.json:
            _print_json([execution_dict(record) for record in records])
            return OK
        columns = [Column("ID"), Column("TASK TYPE"), Column("PHASE"), Column("ATTEMPT"), Column("CREATED")]
        print_table(
            [*columns, Column("REASON", wrap=True)],
            (
                (
                    record.id,
                    record.task_type,
                    f"{record.phase.name} v{record.phase_version}",
                    record.attempt,
                    (iso(record.created_at) or "-")[:19].replace("T", " "),
                    record.reason or "",
                )
                for record in records
            ),
        )
        return OK

    return _with_client(settings, body)


def label_filter(items: Sequence[str]) -> dict[str, str]:
    """`--label KEY=VALUE` options as the labels an execution must carry, every one of them."""
    labels = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise CommandError(f"--label {item!r} is not KEY=VALUE", USAGE)
        labels[key] = value
    return labels


def _events(args: argparse.Namespace, settings: Settings) -> int:
    from executor.cli_tables import Column, print_table
    from executor.views import event_dict

    async def body(client: Client) -> int:
        if await client.get(args.id) is None:
            raise CommandError(f"no execution with id {args.id}")
        timeline = await client.events(args.id)
        if args.json:
            _print_json([event_dict(event) for event in timeline])
            return OK
        rows = []
        for index, event in enumerate(timeline):
            following = timeline[index + 1].occurred_at if index + 1 < len(timeline) else None
            lasted = f"{following - event.occurred_at:.3f}s" if following is not None else "-"
            reason = event.reason or ""
            if event.error is not None:
                reason = f"{reason}: {event.error.message}" if reason else event.error.message
            phase = f"{event.phase.name} v{event.phase_version}"
            rows.append((event.seq, event.attempt, phase, _millis(event.occurred_at), lasted, reason))
        columns = [Column("#"), Column("ATTEMPT"), Column("PHASE"), Column("AT"), Column("LASTED")]
        print_table([*columns, Column("REASON", wrap=True)], rows)
        return OK

    return _with_client(settings, body)


def _abort(args: argparse.Namespace, settings: Settings) -> int:
    from executor.client import SubmissionError
    from executor.store import AbortResult

    async def body(client: Client) -> int:
        try:
            result = await client.abort(args.id, args.reason)
        except SubmissionError as err:
            raise CommandError(f"abort refused: {err}") from None
        if result is AbortResult.NOT_FOUND:
            raise CommandError(f"no execution with id {args.id}")
        message = {
            AbortResult.REQUESTED: "abort requested; the daemon aborts it in its next round",
            AbortResult.ALREADY_FINISHED: "already finished; nothing to abort",
        }[result]
        if args.json:
            _print_json({"id": args.id, "result": result.value, "message": message})
        else:
            print(f"{args.id}: {message}")
        return OK

    return _with_client(settings, body)


def _plugins(args: argparse.Namespace, settings: Settings) -> int:
    from executor.app.parts import collect_registry, task_types
    from executor.cli_tables import Column, print_table
    from executor.queues.commands import paused_task_types

    registry = collect_registry(settings)
    resolver = task_types(settings, registry)
    paused = paused_task_types(settings)
    rows: list[dict[str, Any]] = [
        {
            "id": entry.id,
            "task_types": [t for t in resolver.task_types if resolver.plugin_id_for(t) == entry.id],
            "is_default": entry.is_default,
            "source": registry.source_of(entry.id),
            "queue": entry.queue or "default",
            "pin_to_host": entry.pin_to_host,
            # Paused task types this plugin would run (the default plugin's: those no other claims).
            "paused": None
            if paused is None
            else [t for t in sorted(paused) if resolver.plugin_id_for(t) == entry.id],
        }
        for entry in registry.entries
    ]
    if args.json:
        _print_json(rows)
        return OK
    print_table(
        [
            Column("PLUGIN"),
            Column("TASK TYPES", wrap=True),
            Column("DEFAULT"),
            Column("QUEUE"),
            Column("PAUSED", wrap=True),
            Column("SOURCE", wrap=True),
        ],
        (
            (
                row["id"],
                ", ".join(row["task_types"]) or "-",
                "yes" if row["is_default"] else "",
                row["queue"] + (" (pin)" if row["pin_to_host"] else ""),
                # `?`: no database to ask
                "?" if row["paused"] is None else ", ".join(row["paused"]) or "-",
                row["source"],
            )
            for row in rows
        ),
    )
    return OK


def _replicas(args: argparse.Namespace, settings: Settings) -> int:
    import time

    from executor.store.replicas import list_replicas
    from executor.store.stats import lease_holders
    from executor.views import replica_dicts

    # Silent for three heartbeats: gone (killed, or cut off from the database).
    live_within = 3 * settings.heartbeat_interval.total_seconds()

    async def body(client: Client) -> int:
        found = await list_replicas(client.store, live_within=live_within, include_stale=args.all)
        leases = {h.owner: h.executions for h in await lease_holders(client.store, now=time.time())}
        rows = replica_dicts(found, leases)
        if args.json:
            _print_json(rows)
            return OK
        print(
            f"{'REPLICA':<32}{'STATE':<8}{'STARTED':<21}{'HEARTBEAT':<11}{'ROUNDS':<9}{'LAST ROUND':<21}"
            f"{'IN FLIGHT':<11}LEASED"
        )
        for row in rows:
            state = "live" if row["live"] else "silent" if row["live"] is False else "leases"
            heard = f"{row['silent_for']:.1f}s ago" if row["silent_for"] is not None else "-"
            print(
                f"{row['id'][:31]:<32}{state:<8}{_minute(row['started_at']):<21}{heard:<11}"
                f"{_dash(row['rounds']):<9}{_minute(row['last_round_at']):<21}{_dash(row['in_flight']):<11}"
                f"{row['executions_leased']}"
            )
        return OK

    return _with_client(settings, body)


def _millis(seconds: float) -> str:
    """A time to the millisecond, or "-" when no calendar holds it."""
    try:
        return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="milliseconds")
    except (ValueError, OverflowError, OSError):
        return "-"


def _minute(iso_time: str | None) -> str:
    """An ISO time from `executor.views`, to the second, for a table column."""
    if iso_time is None:
        return "-"
    return datetime.fromisoformat(iso_time).strftime("%Y-%m-%d %H:%M:%S")


def _dash(value: object) -> str:
    return "-" if value is None else str(value)


def _migrate(args: argparse.Namespace, settings: Settings) -> int:
    import anyio

    from executor.app.parts import open_store

    async def go() -> int:
        from executor.store.migrate import current_revision, upgrade

        store = open_store(settings)
        try:
            await upgrade(store.engine)
            print(f"{store.url}: schema at revision {await current_revision(store.engine)}")
        finally:
            await store.close()
        return OK

    return anyio.run(go)


def _config(args: argparse.Namespace, settings: Settings) -> int:
    from executor.settings_sources import effective_settings, unknown_variables

    rows = effective_settings(settings)
    unknown = unknown_variables(settings)
    if args.json:
        _print_json(
            {
                "settings": [{"name": r.variable, "value": r.value, "source": r.source} for r in rows],
                "unknown_variables": unknown,
            }
        )
        return OK
    width = max(len(r.variable) for r in rows) + 2
    shown = [
        "-" if r.value is None else json.dumps(r.value) if isinstance(r.value, dict) else str(r.value)
        for r in rows
    ]
    value_width = min(max(len(v) for v in shown) + 2, 48)
    print(f"{'SETTING':<{width}}{'VALUE':<{value_width}}SOURCE")
    for row, value in zip(rows, shown, strict=True):
        print(f"{row.variable:<{width}}{value:<{value_width}}{row.source}")
    for name in unknown:
        print(f"warning: {name} is set but is no setting (a typo?); it is ignored", file=sys.stderr)
    return OK
