"""`executor retry`, `executor failures` and `executor prune`, registered by `executor.cli`."""

from __future__ import annotations

import argparse
import getpass
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from executor import cli

if TYPE_CHECKING:
    from executor.client import Client
    from executor.history.service import History
    from executor.settings import Settings

# The client, the service and the views are imported by the commands that use them: this module is
# imported by every command line, to register its commands (tests/test_cli_speed.py).


def add_commands(commands: Any, as_json: argparse.ArgumentParser) -> None:
    filters = argparse.ArgumentParser(add_help=False)
    filters.add_argument("--phase", action="append", default=[], type=cli._phase, metavar="PHASE")
    filters.add_argument("--task-type")
    filters.add_argument(
        "--label", action="append", default=[], metavar="KEY=VALUE", help="only executions with this label"
    )
    filters.add_argument(
        "--since", type=_ago, metavar="TIME", help="created at or after: ISO 8601, or 2h ago"
    )
    filters.add_argument("--until", type=_ago, metavar="TIME", help="created before: ISO 8601, or 2h ago")
    filters.add_argument("--error-code", metavar="CODE", help="only executions whose error has this code")
    filters.add_argument("--reason", metavar="TEXT", help="only executions whose reason contains TEXT")

    retry = commands.add_parser(
        "retry",
        parents=[as_json, filters],
        help="run executions that ended PERMANENT_FAILURE or ABORTED again, as a new attempt",
        description="Requeue executions by id, or every one a filter matches (--all: every failed "
        "or aborted one). Each runs again as a new attempt of the same execution, its history kept.",
    )
    retry.add_argument("ids", nargs="*", metavar="ID")
    retry.add_argument("--all", action="store_true", help="with no filter: every failed or aborted execution")
    retry.add_argument("--dry-run", action="store_true", help="count and list, change nothing")
    retry.add_argument("--by", default=None, help="who asks (shown in the event; default: your user name)")
    retry.set_defaults(command=_retry)

    failures = commands.add_parser(
        "failures",
        parents=[as_json, filters],
        help="executions that ended PERMANENT_FAILURE or ABORTED, with counts per error code",
    )
    failures.add_argument("--limit", type=cli._positive, default=50)
    failures.set_defaults(command=_failures)

    prune = commands.add_parser(
        "prune",
        parents=[as_json],
        help="delete finished executions (and their events) older than their retention",
        description="Without --older-than, each final phase's EXECUTOR_RETAIN_* setting applies.",
    )
    prune.add_argument("--older-than", type=cli._duration, metavar="DURATION", help="finished this long ago")
    prune.add_argument("--phase", action="append", default=[], type=cli._phase, metavar="PHASE")
    prune.add_argument("--dry-run", action="store_true", help="count, delete nothing")
    prune.set_defaults(command=_prune)


def _ago(text: str) -> datetime:
    """An ISO 8601 time (UTC when it names no zone), or a duration back from now such as `2h`."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        try:
            return datetime.now(UTC) - cli._duration(text)
        except OverflowError:
            raise argparse.ArgumentTypeError(f"{text!r} is too far in the past") from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _selection(history: History, args: argparse.Namespace) -> Any:
    from executor.client import SubmissionError

    try:
        return history.selection(
            phases=args.phase,
            task_type=args.task_type,
            labels=cli.label_filter(args.label),
            since=args.since,
            until=args.until,
            error_code=args.error_code,
            reason=args.reason,
        )
    except SubmissionError as err:
        raise cli.CommandError(str(err), cli.USAGE) from None


def _has_filter(args: argparse.Namespace) -> bool:
    return bool(
        args.phase
        or args.task_type
        or args.label
        or args.since
        or args.until
        or args.error_code
        or args.reason
    )


def _retry(args: argparse.Namespace, settings: Settings) -> int:
    from executor.client import SubmissionError
    from executor.history.service import History

    by = args.by or f"{getpass.getuser()} (CLI)"
    if args.ids and (_has_filter(args) or args.all):
        raise cli.CommandError("give execution ids or filters, not both", cli.USAGE)
    if not args.ids and not (_has_filter(args) or args.all):
        raise cli.CommandError(
            "give execution ids, or filters (--phase, --task-type, --label, --since, --until, "
            "--error-code, --reason), or --all for every failed or aborted execution",
            cli.USAGE,
        )

    async def body(client: Client) -> int:
        history = History(client)
        try:
            if args.ids:
                return await _retry_ids(history, args, by)
            bulk = await history.retry_many(_selection(history, args), by=by, dry_run=args.dry_run)
        except SubmissionError as err:
            raise cli.CommandError(str(err), cli.USAGE) from None
        if args.json:
            cli._print_json(
                {
                    "dry_run": bulk.dry_run,
                    "matched": bulk.matched,
                    "requeued": bulk.requeued,
                    "refused": [{"id": i, "message": m} for i, m in bulk.refused.items()],
                    "ids": bulk.ids,
                }
            )
            return cli.OK
        if bulk.dry_run:
            for execution_id in bulk.ids:
                print(execution_id)
            print(f"{bulk.matched} executions would be retried (dry run: nothing changed)")
            return cli.OK
        for execution_id, message in bulk.refused.items():
            print(f"{execution_id}: {message}")
        print(f"{bulk.requeued} of {bulk.matched} matching executions requeued")
        return cli.OK

    return cli._with_client(settings, body)


async def _retry_ids(history: History, args: argparse.Namespace, by: str) -> int:
    from executor.history.service import RetryOutcome

    results = []
    for execution_id in args.ids:
        if args.dry_run:
            record = await history.client.get(execution_id)
            problem = "no such execution" if record is None else history_refusal(record)
            results.append((execution_id, problem is None, problem or "would be retried"))
            continue
        result = await history.retry(execution_id, by=by)
        results.append((execution_id, result.outcome is RetryOutcome.REQUEUED, result.message))
    if args.json:
        cli._print_json([{"id": i, "requeued": ok, "message": m} for i, ok, m in results])
    else:
        for execution_id, _, message in results:
            print(f"{execution_id}: {message}")
    return cli.OK if all(ok for _, ok, _ in results) else cli.REFUSED


def history_refusal(record: Any) -> str | None:
    from executor.history.requeue import refusal

    problem = refusal(record)
    return f"not retried: {problem}" if problem else None


def _failures(args: argparse.Namespace, settings: Settings) -> int:
    from executor.client import SubmissionError
    from executor.history.service import History
    from executor.views import execution_dict

    async def body(client: Client) -> int:
        history = History(client)
        try:
            found = await history.failures(_selection(history, args), limit=min(args.limit, 500))
        except SubmissionError as err:
            raise cli.CommandError(str(err), cli.USAGE) from None
        counts = [{"phase": c.phase.name, "error_code": c.error_code, "count": c.count} for c in found.counts]
        if args.json:
            cli._print_json({"counts": counts, "items": [execution_dict(r) for r in found.executions]})
            return cli.OK
        print(f"{'COUNT':<8}{'PHASE':<20}ERROR CODE")
        for row in counts:
            print(f"{row['count']:<8}{row['phase']:<20}{row['error_code'] or '-'}")
        print()
        print(f"{'ID':<38}{'TASK TYPE':<20}{'PHASE':<20}{'ERROR CODE':<24}REASON")
        for record in found.executions:
            code = record.error.code if record.error else "-"
            print(
                f"{record.id:<38}{record.task_type[:19]:<20}{record.phase.name:<20}{code[:23]:<24}"
                f"{record.reason or ''}"
            )
        return cli.OK

    return cli._with_client(settings, body)


def _prune(args: argparse.Namespace, settings: Settings) -> int:
    from executor.client import SubmissionError
    from executor.history.retention import retention_of
    from executor.history.service import History, older_than_cutoffs

    now = time.time()
    if args.older_than is not None:
        try:
            cutoffs = older_than_cutoffs(args.older_than.total_seconds(), args.phase, now)
        except SubmissionError as err:
            raise cli.CommandError(str(err), cli.USAGE) from None
    else:
        kept = retention_of(settings)
        if args.phase:
            kept = {phase: seconds for phase, seconds in kept.items() if phase in args.phase}
        if not kept:
            raise cli.CommandError(
                "nothing to prune: no --older-than, and no EXECUTOR_RETAIN_SUCCESS / _FAILED / _ABORTED "
                "set for the phases asked (unset or 0 keeps a phase forever)",
                cli.USAGE,
            )
        cutoffs = {phase: now - seconds for phase, seconds in kept.items()}

    async def body(client: Client) -> int:
        try:
            report = await History(client).prune(cutoffs, batch=settings.prune_batch, dry_run=args.dry_run)
        except SubmissionError as err:
            raise cli.CommandError(str(err), cli.USAGE) from None
        if report.busy:
            raise cli.CommandError("another replica is pruning right now; try again when it is done")
        if args.json:
            cli._print_json(
                {"dry_run": args.dry_run, "deleted": {p.name: n for p, n in report.deleted.items()}}
            )
            return cli.OK
        verb = "would delete" if args.dry_run else "deleted"
        for phase, count in report.deleted.items():
            print(f"{phase.name}: {verb} {count} executions finished before {_iso(cutoffs[phase])}")
        return cli.OK

    return cli._with_client(settings, body)


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="seconds")
