"""Starting and stepping plugin calls: `handle` for a round's executions, `abort` and `finalize` for
its clean-ups, each under its deadline, each step timed so that a plugin that blocks the loop is named.

This is the hot path of a round. Most calls return without ever suspending, so a call runs its first
step at once, in the round's own task, and costs a task (or a coroutine of the loop's) only when it
suspends. The invoker knows nothing of the store: it gets its contexts made and hands back outcomes.
"""

from __future__ import annotations

import asyncio
import functools
import time
import types
from collections.abc import Awaitable, Callable, Coroutine, Generator
from typing import Any

import anyio

from executor import lifecycle, threadclock
from executor.core import Plugin, PluginStateError
from executor.plugin.task_exec_context import TaskExecContext
from executor.redaction import REDACTOR
from executor.runtime.observer import RoundObserver
from executor.runtime.outcome import OUTCOME_LABELS, clean_up_raised, handle_raised, handled
from executor.runtime.processes import HandledInWorker, ProcessPool, WorkerCleanUpError
from executor.runtime.tasks import cancel_and_wait

#: A plugin call that holds the event loop longer than this in one step is reported by name; a step
#: that took longer only because the process waited for a CPU is reported as starvation instead.
BLOCKING_STEP_SECONDS = 0.1
#: At most one `event_loop.starved` line per this many seconds (the metric counts every step).
_STARVED_LOG_EVERY = 10.0


class Call:
    """One plugin call of a round (a `handle`, or an attempt's clean-up): pending while `outcome` is
    None, finished once `finish` has set it.

    It stands where a tuple stood (no object is added per execution), and it is the unit a round
    hands to the invoker and reads back. A round commits the calls finished within its budget; it
    gives each call still pending a `sink`, which hears the outcome when it comes (see
    `Stragglers`), and the call goes on in the background meanwhile.
    """

    __slots__ = ("dropped", "index", "outcome", "plugin", "sink", "started", "task", "tctx")

    def __init__(self, index: int, plugin: Plugin, tctx: TaskExecContext) -> None:
        #: Where the call's outcome goes among the round's outcomes.
        self.index = index
        self.plugin = plugin
        self.tctx = tctx
        self.outcome: Any = None
        #: Who hears the outcome of a call that outlived its round's budget.
        self.sink: Callable[[Call], None] | None = None
        #: The task that runs the call, when it has one of its own (None: the round's carrier).
        self.task: asyncio.Task[Any] | None = None
        #: Set when the call's lease was lost: it is cancelled and its outcome goes nowhere.
        self.dropped = False
        self.started = 0.0

    def finish(self, outcome: Any) -> None:
        if self.dropped:
            return
        self.outcome = outcome
        if self.sink is not None:
            self.sink(self)


class Invoker:
    def __init__(
        self,
        *,
        handle_timeout: float,
        max_parallelism: int,
        observer: RoundObserver,
        processes: ProcessPool,
        blocking_threads: int = 40,
    ) -> None:
        self._handle_timeout = handle_timeout
        self._max_parallelism = max_parallelism
        self.observer = observer
        #: The worker threads of `blocking=True` plugins: bounded, and never holding a round.
        self._threads = anyio.CapacityLimiter(blocking_threads)
        #: The worker processes of `cpu_bound=True` plugins (the loop's: it ends them).
        self._processes = processes
        self._starved_logged_at = float("-inf")

    async def handle(self, calls: list[Call], budget: float) -> asyncio.Task[None] | None:
        """Start every call's `handle` and wait for them up to `budget` seconds.

        Each call's outcome is set as it finishes. The calls run in a task of the round's own, the
        carrier: most of them return in their first step, so the carrier ends at once and the
        round goes on. Otherwise the round waits no longer than `budget`; the carrier goes on
        with the calls still pending (returned, for the caller to keep), each under its deadline.

        The calls share one deadline for the round (see `_handle_all`): an anyio task group with a
        timeout scope per execution cost more than the rest of a one-round task together. The
        deadline is the same for each, since they all start together; when a round holds more
        executions than may run at once, each waits its turn and has a deadline of its own.
        """
        started = time.monotonic()
        for call in calls:
            call.started = started
        work = self._handle_all(calls) if len(calls) <= self._max_parallelism else self._handle_limited(calls)
        loop = asyncio.get_running_loop()
        carrier = loop.create_task(work)
        try:
            await _wait_while_calls_finish(carrier, calls, loop.time() + budget)
        except BaseException:
            await cancel_and_wait([carrier])
            raise
        if carrier.done():
            carrier.result()  # a bug of the invoker's own, not a plugin's: let it be seen
            return None
        return carrier

    async def _handle_all(self, calls: list[Call]) -> None:
        """Every `handle` at once, under one deadline for the round.

        Most handles return without ever suspending. Each call starts here, in the carrier, and
        one that returns in its first step needs no task of its own (a task per call was the
        largest cost left of a one-round task). The first call that suspends goes on in the
        carrier, and each call after it starts in a task of its own, so all still run at once.
        A call that has suspended cannot move to another task: a cancel scope it entered belongs
        to the task that entered it.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._handle_timeout
        for index, call in enumerate(calls):
            coroutine = self._handle(call.plugin, call.tctx)
            try:
                awaited = coroutine.send(None)
            except StopIteration as returned:
                call.finish(returned.value)
                continue
            rest = calls[index + 1 :]
            for later in rest:
                later.task = loop.create_task(self._handle_into(later))
            tasks = [later.task for later in rest if later.task is not None]
            try:
                outcome: lifecycle.Outcome | None
                try:
                    async with asyncio.timeout_at(deadline):
                        outcome = await stepped(coroutine, awaited)
                except TimeoutError:
                    outcome = self._timed_out(call.plugin)
                except asyncio.CancelledError:
                    if not call.dropped:
                        raise
                    # Only this call was cancelled (its lease was lost): the others go on.
                    current = asyncio.current_task()
                    if current is not None:
                        current.uncancel()
                    outcome = None
                call.finish(outcome)
                await self._settled(rest, deadline)
            except BaseException:
                # The round itself was cancelled (shutdown): its plugin calls go with it.
                await cancel_and_wait(tasks)
                raise
            break

    async def _handle_into(self, call: Call) -> None:
        try:
            call.finish(await self._handle(call.plugin, call.tctx))
        except asyncio.CancelledError:
            if not call.dropped:
                raise

    async def _settled(self, calls: list[Call], deadline: float) -> None:
        """Wait for the calls' tasks; those still running at `deadline` are cancelled, timed out."""
        running = [call.task for call in calls if call.task is not None and not call.task.done()]
        late: set[asyncio.Task[Any]] = set()
        if running:
            timeout = max(deadline - asyncio.get_running_loop().time(), 0.0)
            _, late = await asyncio.wait(running, timeout=timeout)
        if late:
            await cancel_and_wait(late)
            for call in calls:
                if call.task in late and call.outcome is None:
                    call.finish(self._timed_out(call.plugin))

    async def _handle_limited(self, calls: list[Call]) -> None:
        """At most EXECUTOR_MAX_PARALLELISM `handle` calls at once, each with its own deadline."""
        slots = asyncio.Semaphore(self._max_parallelism)

        async def one(call: Call) -> None:
            async with slots:
                try:
                    async with asyncio.timeout(self._handle_timeout):
                        outcome = await self._handle(call.plugin, call.tctx)
                except TimeoutError:
                    outcome = self._timed_out(call.plugin)
                except asyncio.CancelledError:
                    if not call.dropped:
                        raise
                    return
            call.finish(outcome)

        loop = asyncio.get_running_loop()
        for call in calls:
            call.task = loop.create_task(one(call))
        tasks = [call.task for call in calls if call.task is not None]
        try:
            await asyncio.gather(*tasks)
        except BaseException:
            await cancel_and_wait(tasks)
            raise

    async def _handle(self, plugin: Plugin, tctx: TaskExecContext) -> lifecycle.Outcome:
        """`handle`, and what it came to: a transition, or why it was not one."""
        started = time.perf_counter()
        try:
            done, returned = self.start(plugin, plugin.handle, tctx)
            if not done:
                returned = await returned
        except HandledInWorker as decided:
            outcome: lifecycle.Outcome = decided.outcome  # ran in a worker process, checked there
        except PluginStateError as err:
            outcome = handle_raised(err)
        except Exception as err:
            tctx.logger.warning("handle.raised", error=f"{type(err).__name__}: {err}", exc_info=True)
            outcome = handle_raised(err)
        else:
            outcome = handled(returned, tctx)
        seconds = time.perf_counter() - started
        self.observer.handle_finished(plugin.id, OUTCOME_LABELS[type(outcome)], seconds)
        return outcome

    def _timed_out(self, plugin: Plugin) -> lifecycle.Outcome:
        self.observer.handle_finished(plugin.id, "system_fault", self._handle_timeout)
        return lifecycle.SystemFault(
            "HandleTimeout",
            f"handle did not return within {self._handle_timeout:g}s (EXECUTOR_HANDLE_TIMEOUT)",
        )

    async def clean_up_step(
        self, plugin: Plugin, method: Callable[[Any], Awaitable[Any]], tctx: TaskExecContext, name: str
    ) -> str | None:
        """Run `abort` or `finalize`; None when it completed, else why not (secrets scrubbed)."""
        try:
            with anyio.fail_after(self._handle_timeout) as deadline:
                done, returned = self.start(plugin, method, tctx)
                if not done:
                    await returned
        except Exception as err:
            if isinstance(err, TimeoutError) and deadline.cancel_called:
                error = f"{name} did not return within {self._handle_timeout:g}s (EXECUTOR_HANDLE_TIMEOUT)"
            elif isinstance(err, WorkerCleanUpError):
                error = str(err)
            else:
                error = clean_up_raised(name, err)
            tctx.logger.warning(f"{name}.failed", error=error)
            return str(REDACTOR.text(error))
        return None

    def start(
        self, plugin: Plugin, method: Callable[[Any], Awaitable[Any]], tctx: TaskExecContext
    ) -> tuple[bool, Any]:
        """Start a plugin call: (True, what it returned) when it ended in its first step, as most
        do, else (False, an awaitable of what it will return).

        A `cpu_bound` plugin's call runs in a worker process (see `ProcessPool.call`, which raises
        what a `handle` came to), a blocking plugin's on a worker thread with an event loop of its
        own: either is then awaited, so a long one outlives its round like any slow call. Any
        other runs its first step here, at once: a call that needs no second step needs no
        coroutine of the loop's either. Each step is timed, so that a plugin which blocks the loop
        anyway is named in a warning instead of silently slowing every execution.
        """
        properties = plugin.properties
        if properties.cpu_bound:
            return False, self._processes.call(plugin, method.__name__, tctx)
        if properties.blocking:

            def in_thread() -> Any:
                return asyncio.run(method(tctx))  # type: ignore[arg-type]

            return False, anyio.to_thread.run_sync(in_thread, abandon_on_cancel=True, limiter=self._threads)
        coroutine = method(tctx)
        # `type(...) is` first: an ABC's isinstance costs about as much as a whole echo `handle`.
        if type(coroutine) is not types.CoroutineType and not isinstance(coroutine, Coroutine):
            return False, coroutine
        before = threadclock.snapshot()
        started = time.perf_counter()
        try:
            awaited = coroutine.send(None)
        except StopIteration as stop:
            return True, stop.value
        finally:
            elapsed = time.perf_counter() - started
            if elapsed > BLOCKING_STEP_SECONDS:
                self._slow_step(plugin, tctx, threadclock.spent(before, elapsed))
        return False, stepped(coroutine, awaited, functools.partial(self._slow_step, plugin, tctx))

    def _slow_step(self, plugin: Plugin, tctx: TaskExecContext, spent: threadclock.Spent) -> None:
        """A step over the limit: the plugin's doing when it held the thread that long (running, or
        blocked in a call it made), else the process's, which waited for a CPU (starvation)."""
        if spent.held > BLOCKING_STEP_SECONDS:
            self.observer.loop_blocked(plugin.id, spent.held)
            tctx.logger.warning(
                "plugin.blocked_event_loop",
                plugin=plugin.id,
                seconds=round(spent.held, 3),
                cpu_seconds=round(spent.cpu, 3),
                blocked_seconds=round(spent.blocked, 3),
                waiting_for_cpu_seconds=round(spent.waiting, 3),
                hint="declare PluginProperties(blocking=True) or make the call non-blocking",
            )
            return
        self.observer.loop_starved(spent.waiting)
        now = time.monotonic()
        if now - self._starved_logged_at >= _STARVED_LOG_EVERY:
            self._starved_logged_at = now
            tctx.logger.warning(
                "event_loop.starved",
                seconds=round(spent.wall, 3),
                waiting_for_cpu_seconds=round(spent.waiting, 3),
                held_seconds=round(spent.held, 3),
                hint="the process waited for a CPU: the machine is overloaded or the process is "
                "throttled (cgroup CPU limit); no plugin held the loop",
            )


#: How long a round waits, within its budget, for one more of its calls to finish before it takes
#: the rest for slow ones. Calls that suspend briefly (a remote call of a millisecond or two) finish
#: within a few slices and are committed with their round; calls that will take long (half a
#: second, say) let a whole slice pass without any finishing, and the round stops waiting at once
#: instead of spending its whole budget on them (measured with bench scenario 8: 1% of calls
#: awaiting 0.5 s cost each round with one the whole 5 ms budget, a third of the throughput).
IDLE_SLICE_SECONDS = 0.001


async def _wait_while_calls_finish(carrier: asyncio.Task[None], calls: list[Call], deadline: float) -> None:
    """Wait for `carrier` until `deadline`, but no longer than a slice in which no call finished."""
    loop = asyncio.get_running_loop()
    pending = len(calls)
    while not carrier.done():
        remaining = deadline - loop.time()
        if remaining <= 0:
            return
        await asyncio.wait((carrier,), timeout=min(IDLE_SLICE_SECONDS, remaining))
        if carrier.done():
            return
        still = sum(1 for call in calls if call.outcome is None)
        if still == pending:
            return  # nothing finished in a whole slice: what is left is slow
        pending = still


@types.coroutine
def stepped(
    coroutine: Coroutine[Any, Any, Any],
    awaited: Any,
    slow: Callable[[threadclock.Spent], None] | None = None,
) -> Generator[Any, Any, Any]:
    """Go on driving `coroutine`, started by this task and suspended on `awaited`, as `await`
    would have: what the event loop sends or throws in reaches it. With `slow`, each step is
    timed, and where the time of one that took too long went is reported to it."""
    while True:
        sent, thrown = None, None
        try:
            sent = yield awaited
        except BaseException as err:  # cancellation and timeouts must reach the plugin's code
            thrown = err
        before = threadclock.snapshot() if slow is not None else 0.0
        started = time.perf_counter()
        try:
            awaited = coroutine.throw(thrown) if thrown is not None else coroutine.send(sent)
        except StopIteration as stop:
            return stop.value
        finally:
            elapsed = time.perf_counter() - started
            if slow is not None and elapsed > BLOCKING_STEP_SECONDS:
                slow(threadclock.spent(before, elapsed))
