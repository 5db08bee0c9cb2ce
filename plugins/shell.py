"""shell: runs commands the operator declared, as local processes that survive the daemon.

Off until configured. The operator declares each command in the plugin configuration
(`EXECUTOR_PLUGIN_CONFIG`, key `shell`): a name, an argv template whose `{param}` placeholders a
submission fills, a working directory, environment variables and a time limit. A submission names
a declared command and gives its parameters: `{"command": "resize", "params": {"src": "a.png"}}`.
Each parameter becomes (part of) one argv element and is passed to exec as is: no shell ever parses
what a submission sent. An undeclared command, a missing or an unknown parameter is refused when
submitted, by every door alike (the input model below checks it).

Each attempt runs in its own session and process group (`executor.localproc`), its stdout and
stderr in `<log_dir>/<execution id>/<attempt>/output.log`; the plugin state keeps the process's
handle, so a restarted daemon follows a command that is still running to its real exit code, and
a command that died with its host (or was killed with its wrapper) fails with a reason saying so.
Abort, the command's time limit and the execution's own timeout terminate the whole group: TERM,
then KILL after `kill_grace`, in the background so the loop never waits for it.

Outputs: `exit_code` and `output_tail` (the last `tail_bytes` of the log). A non-zero exit is a
(retryable) failure whose message holds the tail. The full log: `executor logs ID [--follow]`,
`GET /api/v1/executions/{id}/logs`, and the dashboard's link (a `TaskLog`).
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

from executor import plugin_registry
from executor.core import (
    PhaseInfo,
    Plugin,
    PluginEntry,
    SetupContext,
    TaskExecutionContext,
    TaskInfo,
    TaskLog,
    Transition,
    do_transition,
    parse_duration,
    validate_plugin_config,
)
from executor.localproc import ProcessHandle, exit_status, is_running, same_boot, spawn, tail, terminate

PLUGIN_ID = "shell"
TASK_TYPE = "shell"
#: `{name}` in an argv element is a parameter; other braces are literal.
PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


def _seconds(value: Any) -> float:
    return parse_duration(value).total_seconds() if not isinstance(value, int | float) else float(value)


Seconds = Annotated[float, BeforeValidator(_seconds), Field(gt=0)]


class CommandSpec(BaseModel):
    """One declared command."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    argv: list[str] = Field(min_length=1)
    cwd: str | None = None
    #: Set for the command, over the few variables it inherits (`inherit_env`).
    env: dict[str, str] = Field(default_factory=dict)
    #: Past this the group is terminated and the attempt fails with `TimeoutExpired`.
    timeout: Seconds | None = None
    #: Values of parameters a submission may leave out.
    defaults: dict[str, str] = Field(default_factory=dict)

    @property
    def params(self) -> set[str]:
        return {name for part in self.argv for name in PLACEHOLDER.findall(part)}

    def render(self, params: dict[str, str]) -> list[str]:
        values = {**self.defaults, **params}
        return [PLACEHOLDER.sub(lambda m: values[m.group(1)], part) for part in self.argv]


class ShellConfig(BaseModel):
    """`EXECUTOR_PLUGIN_CONFIG["shell"]`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    commands: dict[str, CommandSpec] = Field(default_factory=dict)
    #: Where the per-attempt log directories go (relative: to the daemon's working directory).
    log_dir: str = "shell-logs"
    kill_grace: Seconds = 10.0
    #: How often a running command is looked at.
    poll_interval: Seconds = 1.0
    tail_bytes: int = Field(4096, ge=0, le=1024 * 1024)
    #: The daemon's variables a command sees (never the rest: they hold the daemon's secrets).
    inherit_env: list[str] = Field(default_factory=lambda: ["PATH", "HOME", "LANG", "LC_ALL", "TZ"])


# -- the declared commands, for submissions ------------------------------------------------------

#: Set by `load_plugin` in the daemon; elsewhere (the CLI) read from the settings when asked.
_loaded: dict[str, ShellConfig] = {}


def declared_config() -> ShellConfig:
    """The configuration submissions are checked against.

    THE ONE PLACE that reads the configuration outside the daemon: `executor submit` loads no
    plugin, so it reads `EXECUTOR_PLUGIN_CONFIG` through the settings, as the daemon does. When the
    plugin runtime hands every door the validated plugin configuration, this becomes that lookup.
    """
    if PLUGIN_ID in _loaded:
        return _loaded[PLUGIN_ID]
    from executor.settings import load_settings

    return parse_config(load_settings().plugin_config.get(PLUGIN_ID))


def parse_config(raw: Any) -> ShellConfig:
    """As the plugin runtime validates `config_model` at start-up (the same one-line error)."""
    return validate_plugin_config(PLUGIN_ID, ShellConfig, raw)


def _param_value(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError("parameter values must be strings or numbers")
    text = str(value)
    if "\x00" in text:
        raise ValueError("parameter values must not hold a NUL character")
    return text


class ShellInputs(BaseModel):
    """A submission: a declared command and its parameters."""

    model_config = ConfigDict(extra="forbid")

    command: str
    params: dict[str, Annotated[str, BeforeValidator(_param_value)]] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _declared(self) -> ShellInputs:
        config = declared_config()
        spec = config.commands.get(self.command)
        if spec is None:
            known = ", ".join(sorted(config.commands)) or "none: the shell plugin is not configured"
            raise ValueError(f"no command {self.command!r} is declared (declared: {known})")
        missing = sorted(spec.params - set(self.params) - set(spec.defaults))
        if missing:
            raise ValueError(f"command {self.command!r} needs the parameters {', '.join(missing)}")
        unknown = sorted(set(self.params) - spec.params)
        if unknown:
            raise ValueError(f"command {self.command!r} takes no parameters {', '.join(unknown)}")
        return self


# -- the plugin ----------------------------------------------------------------------------------


class ShellState(BaseModel):
    """Plugin state: what finds the process again. `log_path` is what `executor logs` reads."""

    command: str = ""
    log_path: str | None = None
    process: ProcessHandle | None = None
    timeout: float | None = None


class ShellPlugin(Plugin):
    id = PLUGIN_ID

    def __init__(self, config: ShellConfig) -> None:
        self.config = config
        self.log_dir = Path(config.log_dir).resolve()
        #: The wrappers this daemon started, by log path: reaped as they end.
        self._children: dict[str, subprocess.Popen[bytes]] = {}
        self._stopping: set[str] = set()
        self._reaped_at = 0.0
        self._background: set[asyncio.Task[None]] = set()

    async def handle(self, tctx: TaskExecutionContext) -> Transition:
        self._reap()
        _, state = tctx.plugin_state_reader.get(ShellState)
        if state.process is None:
            return await self._launch(tctx)
        return await self._follow(tctx, state, state.process)

    async def abort(self, tctx: TaskExecutionContext) -> None:
        _, state = tctx.plugin_state_reader.get(ShellState)
        if state.process is not None:
            self._stop_group(state.process, "aborted")

    async def finalize(self, tctx: TaskExecutionContext) -> None:
        """Whatever ended the attempt (the execution's timeout, a deadline, a fault), never leave
        its command running unowned."""
        _, state = tctx.plugin_state_reader.get(ShellState)
        if state.process is not None and is_running(state.process):
            self._stop_group(state.process, "finalized while running")

    async def aclose(self) -> None:
        for task in list(self._background):
            task.cancel()

    def _reap(self) -> None:
        """Reap the wrappers that ended, at most once a second: also those whose execution another
        replica follows now, which would otherwise stay zombies of this daemon."""
        now = time.monotonic()
        if now - self._reaped_at < 1.0:
            return
        self._reaped_at = now
        for key, popen in list(self._children.items()):
            if popen.poll() is not None:
                del self._children[key]

    # -- steps -----------------------------------------------------------------------------------

    async def _launch(self, tctx: TaskExecutionContext) -> Transition:
        meta = tctx.task_execution_metadata
        try:
            inputs = ShellInputs.model_validate(await tctx.input_reader.get())
        except ValidationError as err:
            message = "; ".join(e["msg"] for e in err.errors(include_url=False))
            return do_transition(PhaseInfo.failure("InvalidCommand", message))
        spec = self.config.commands[inputs.command]
        directory = self.log_dir / meta.execution_id / str(meta.attempt)
        record = directory / "process.json"
        if record.exists():  # started by a round whose commit was lost: adopt it, never run twice
            handle = ProcessHandle.model_validate_json(record.read_text())
        else:
            # The execution stays on this host from here on (its process and log are here): the
            # entry's `pin_to_host` pinned it to this replica's host at its first claim.
            argv = spec.render(inputs.params)
            env = {k: os.environ[k] for k in self.config.inherit_env if k in os.environ} | spec.env
            handle, popen = await asyncio.to_thread(
                spawn,
                argv,
                cwd=spec.cwd,
                env=env,
                log_file=directory / "output.log",
                exit_file=directory / "exit-code",
            )
            self._children[handle.log_file] = popen
            record.write_text(handle.model_dump_json())
            tctx.logger.info("shell.started", command=inputs.command, pid=handle.pid, log=handle.log_file)
        state = ShellState(
            command=inputs.command, log_path=handle.log_file, process=handle, timeout=spec.timeout
        )
        tctx.plugin_state_writer.put(0, state)
        return do_transition(
            PhaseInfo.running(0, self._info(tctx, handle), reason="Started"),
            requeue_after=self.config.poll_interval,
        )

    async def _follow(
        self, tctx: TaskExecutionContext, state: ShellState, handle: ProcessHandle
    ) -> Transition:
        popen = self._children.get(handle.log_file)
        if popen is not None and popen.poll() is not None:
            self._children.pop(handle.log_file, None)
        running = is_running(handle)
        code = exit_status(handle)  # read after the liveness check: an end between them is seen
        info = self._info(tctx, handle)
        if code is not None:
            return await self._ended(tctx, state, handle, code, info)
        if not running:
            self._children.pop(handle.log_file, None)
            if not same_boot(handle):
                why = "the host restarted while the command ran: it died with the host"
            else:
                why = (
                    "the command's process group was killed (its wrapper with it) "
                    "before it could record an exit code"
                )
            return do_transition(PhaseInfo.system_failure("ProcessLost", f"{state.command}: {why}", info))
        limit = state.timeout
        if limit is not None and time.time() - handle.started_at > limit:
            self._stop_group(handle, "timed out")
            message = f"{state.command} ran longer than its time limit of {limit:g}s and was terminated"
            return do_transition(
                PhaseInfo.retryable_failure("TimeoutExpired", self._with_tail(message, handle), info)
            )
        return do_transition(PhaseInfo.running(0, info), requeue_after=self.config.poll_interval)

    async def _ended(
        self, tctx: TaskExecutionContext, state: ShellState, handle: ProcessHandle, code: int, info: TaskInfo
    ) -> Transition:
        self._children.pop(handle.log_file, None)
        output_tail = tail(handle.log_file, self.config.tail_bytes)
        await tctx.output_writer.put({"exit_code": code, "output_tail": output_tail})
        if code == 0:
            return do_transition(PhaseInfo.success(info))
        what = f"was killed by {_signal_name(-code)}" if code < 0 else f"exited with {code}"
        message = self._with_tail(f"{state.command} {what}", handle)
        return do_transition(PhaseInfo.retryable_failure("CommandFailed", message, info))

    def _with_tail(self, message: str, handle: ProcessHandle) -> str:
        output_tail = tail(handle.log_file, self.config.tail_bytes)
        return f"{message}; its output ends with:\n{output_tail}" if output_tail else f"{message} (no output)"

    def _info(self, tctx: TaskExecutionContext, handle: ProcessHandle) -> TaskInfo:
        execution_id = tctx.task_execution_metadata.execution_id
        return TaskInfo(
            logs=(TaskLog("output", f"/api/v1/executions/{execution_id}/logs"),),
            custom_info={"pid": handle.pid, "log_file": handle.log_file},
        )

    def _stop_group(self, handle: ProcessHandle, why: str) -> None:
        """TERM now, KILL after the grace, in the background: the caller never waits for it."""
        if handle.log_file in self._stopping:
            return
        self._stopping.add(handle.log_file)
        self._run_background(self._terminate(handle), name=f"shell terminate {handle.pid} ({why})")

    async def _terminate(self, handle: ProcessHandle) -> None:
        try:
            await terminate(handle, self.config.kill_grace, self._children.get(handle.log_file))
        finally:
            self._children.pop(handle.log_file, None)
            self._stopping.discard(handle.log_file)

    def _run_background(self, work: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.get_running_loop().create_task(work, name=name)
        self._background.add(task)
        task.add_done_callback(self._background.discard)


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def load(setup: SetupContext) -> ShellPlugin:
    # EXECUTOR_PLUGIN_CONFIG["shell"], validated against `config_model` by the plugin runtime;
    # validated here for a caller that built the SetupContext itself.
    config = setup.config
    if not isinstance(config, ShellConfig):
        config = parse_config(setup.plugin_config.get(PLUGIN_ID))
    _loaded[PLUGIN_ID] = config
    return ShellPlugin(config)


plugin_registry().register_core_plugin(
    PluginEntry(
        id=PLUGIN_ID,
        registered_task_types=[TASK_TYPE],
        load_plugin=load,
        input_model=ShellInputs,
        config_model=ShellConfig,
        # Every round, abort and finalize where the process runs, also after a restart.
        pin_to_host=True,
    )
)

__all__ = ["CommandSpec", "ShellConfig", "ShellInputs", "ShellPlugin"]
