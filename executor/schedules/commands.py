"""`executor schedule add|list|get|pause|resume|delete|run-now`, registered by `executor.cli`."""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from executor import cli

if TYPE_CHECKING:
    from executor.client import Client
    from executor.schedules.model import ScheduleSpec
    from executor.settings import Settings

# The client, the service and the views are imported by the commands that use them: this module is
# imported by every command line, to register `executor schedule` (tests/test_cli_speed.py).


def add_commands(commands: Any, as_json: argparse.ArgumentParser) -> None:
    schedule = commands.add_parser("schedule", help="recurring executions: add, list, pause, resume, ...")
    sub = schedule.add_subparsers(title="schedule commands", required=True, metavar="ACTION")

    add = sub.add_parser("add", parents=[as_json], help="declare a schedule")
    add.add_argument("name")
    add.add_argument("task_type", metavar="TYPE")
    when = add.add_mutually_exclusive_group(required=True)
    when.add_argument("--cron", metavar="EXPR", help="five-field cron expression, in --timezone")
    when.add_argument("--every", metavar="DURATION", help="a fixed interval such as 30s or 1h")
    add.add_argument("--timezone", default="UTC", help="IANA time zone of --cron (default UTC)")
    add.add_argument("--inputs", default="{}", metavar="JSON")
    add.add_argument("--label", action="append", default=[], metavar="KEY=VALUE")
    add.add_argument("--priority", type=int, default=0)
    add.add_argument("--max-attempts", type=int, default=None)
    add.add_argument("--timeout", metavar="DURATION")
    add.add_argument("--deadline", metavar="DURATION")
    add.add_argument("--backoff-base", metavar="DURATION")
    add.add_argument("--backoff-max", metavar="DURATION")
    add.add_argument("--start", metavar="TIME", help="ISO 8601: no slot before")
    add.add_argument("--end", metavar="TIME", help="ISO 8601: no slot after")
    add.add_argument("--jitter", metavar="DURATION", help="delay each execution by up to this")
    add.add_argument("--misfire", choices=["once", "each", "skip"], default="once")
    add.add_argument("--misfire-limit", type=int, default=10)
    add.add_argument("--misfire-grace", metavar="DURATION", default="60s")
    add.add_argument("--overlap", choices=["allow", "skip"], default="allow")
    add.set_defaults(command=_add)

    listing = sub.add_parser("list", parents=[as_json], help="the schedules, their next and last slot")
    listing.set_defaults(command=_list)
    for action, helptext in (
        ("get", "one schedule and the slots it ran"),
        ("pause", "stop making executions until resumed"),
        ("resume", "start again from the next slot (slots passed while paused do not run)"),
        ("delete", "remove the schedule (its executions stay)"),
        ("run-now", "make one execution now, outside the schedule's slots; prints its id"),
    ):
        part = sub.add_parser(action, parents=[as_json], help=helptext)
        part.add_argument("name")
        part.set_defaults(command=_action, action=action)


def _seconds(option: str, text: str | None) -> float | None:
    from executor.core import parse_duration

    if text is None:
        return None
    try:
        return parse_duration(text).total_seconds()
    except ValueError as err:
        raise cli.CommandError(f"{option}: {err}", cli.USAGE) from None


def _time(option: str, text: str | None) -> float | None:
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise cli.CommandError(f"{option} {text!r} is not an ISO 8601 time", cli.USAGE) from None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def _spec(args: argparse.Namespace) -> ScheduleSpec:
    from executor.schedules.model import ScheduleError

    try:
        inputs = json.loads(args.inputs)
    except json.JSONDecodeError as err:
        raise cli.CommandError(f"--inputs is not valid JSON: {err}", cli.USAGE) from None
    labels = {}
    for item in args.label:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise cli.CommandError(f"--label {item!r} is not KEY=VALUE", cli.USAGE)
        labels[key] = value
    from executor.schedules.service import parse_spec

    try:
        return parse_spec(
            {
                "name": args.name,
                "task_type": args.task_type,
                "inputs": inputs,
                "cron": args.cron,
                "timezone": args.timezone,
                "every": _seconds("--every", args.every),
                "start": _time("--start", args.start),
                "end": _time("--end", args.end),
                "jitter": _seconds("--jitter", args.jitter) or 0.0,
                "misfire": args.misfire,
                "misfire_limit": args.misfire_limit,
                "misfire_grace": _seconds("--misfire-grace", args.misfire_grace),
                "overlap": args.overlap,
                "labels": labels,
                "priority": args.priority,
                "max_attempts": args.max_attempts,
                "timeout": args.timeout,
                "deadline": args.deadline,
                "backoff_base": args.backoff_base,
                "backoff_max": args.backoff_max,
            }
        )
    except ScheduleError as err:
        raise cli.CommandError(str(err)) from None


def _add(args: argparse.Namespace, settings: Settings) -> int:
    from executor.client import SubmissionError
    from executor.schedules.model import ScheduleError
    from executor.schedules.service import Schedules
    from executor.schedules.views import schedule_dict

    spec = _spec(args)

    async def body(client: Client) -> int:
        try:
            row = await Schedules(client).add(spec, "cli")
        except (ScheduleError, SubmissionError) as err:
            raise cli.CommandError(f"schedule refused: {err}") from None
        if args.json:
            cli._print_json(schedule_dict(row))
        else:
            print(f"{row.name}: next slot {schedule_dict(row)['next_slot']}")
        return cli.OK

    return cli._with_client(settings, body, with_plugins=True)


def _list(args: argparse.Namespace, settings: Settings) -> int:
    from executor.schedules.service import Schedules
    from executor.schedules.views import schedule_dict

    async def body(client: Client) -> int:
        rows = await Schedules(client).all()
        if args.json:
            cli._print_json([schedule_dict(row) for row in rows])
            return cli.OK
        print(f"{'NAME':<28}{'TASK TYPE':<18}{'WHEN':<28}{'NEXT SLOT':<26}{'LAST SLOT':<26}STATE")
        for row in rows:
            view = schedule_dict(row)
            when = (
                f"{row.spec['cron']} {row.spec['timezone']}"
                if row.spec.get("cron")
                else f"every {row.spec['every']:g}s"
            )
            state = "paused" if row.paused else ("ended" if row.next_slot_at is None else "active")
            print(
                f"{row.name[:27]:<28}{str(view['task_type'])[:17]:<18}{when[:27]:<28}"
                f"{view['next_slot'] or '-':<26}{view['last_slot'] or '-':<26}{state}"
            )
        return cli.OK

    return cli._with_client(settings, body)


def _action(args: argparse.Namespace, settings: Settings) -> int:
    from executor.client import SubmissionError
    from executor.schedules.model import ScheduleError
    from executor.schedules.service import Schedules
    from executor.schedules.views import schedule_dict

    async def body(client: Client) -> int:
        schedules = Schedules(client)
        try:
            if args.action == "run-now":
                execution_id = await schedules.run_now(args.name)
                cli._print_json({"id": execution_id}) if args.json else print(execution_id)
                return cli.OK
            if args.action == "delete":
                await schedules.delete(args.name)
                cli._print_json({"name": args.name, "deleted": True}) if args.json else print(
                    f"{args.name}: deleted"
                )
                return cli.OK
            if args.action == "get":
                row = await schedules.get(args.name)
                if row is None:
                    raise LookupError(args.name)
            else:
                row = await (schedules.pause if args.action == "pause" else schedules.resume)(args.name)
        except LookupError:
            raise cli.CommandError(f"no schedule named {args.name!r}") from None
        except (ScheduleError, SubmissionError) as err:
            raise cli.CommandError(f"schedule refused: {err}") from None
        view = schedule_dict(row, await schedules.store.slots(row.id))
        if args.json:
            cli._print_json(view)
        else:
            state = "paused" if row.paused else "active"
            nxt, last = view["next_slot"] or "-", view["last_slot"] or "-"
            print(f"{row.name}: {state}, next slot {nxt}, last slot {last}")
            for slot in view["slots"]:
                print(f"  {slot['slot']}  {slot['execution_id']}")
        return cli.OK

    return cli._with_client(settings, body, with_plugins=args.action == "run-now")
