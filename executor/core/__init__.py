"""The contract plugin authors import. No I/O here: only the shapes a plugin reads and returns."""

from executor.core.durations import parse_duration
from executor.core.exec_context import (
    InputReader,
    Logger,
    OutputWriter,
    PluginStateError,
    PluginStateReader,
    PluginStateWriter,
    ResourceManager,
    SecretManager,
    SecretNotFoundError,
    TaskExecutionContext,
    TaskExecutionMetadata,
)
from executor.core.phase import (
    FINAL_PHASES,
    ErrorKind,
    ExecutionError,
    Phase,
    PhaseInfo,
    TaskInfo,
    TaskLog,
)
from executor.core.plugin import (
    LoadPlugin,
    Plugin,
    PluginEntry,
    PluginProperties,
    ResourceRegistrar,
    SetupContext,
)
from executor.core.transition import UNKNOWN_TRANSITION, Transition, TransitionType, do_transition

__all__ = [
    "FINAL_PHASES",
    "UNKNOWN_TRANSITION",
    "ErrorKind",
    "ExecutionError",
    "InputReader",
    "LoadPlugin",
    "Logger",
    "OutputWriter",
    "Phase",
    "PhaseInfo",
    "Plugin",
    "PluginEntry",
    "PluginProperties",
    "PluginStateError",
    "PluginStateReader",
    "PluginStateWriter",
    "ResourceManager",
    "ResourceRegistrar",
    "SecretManager",
    "SecretNotFoundError",
    "SetupContext",
    "TaskExecutionContext",
    "TaskExecutionMetadata",
    "TaskInfo",
    "TaskLog",
    "Transition",
    "TransitionType",
    "do_transition",
    "parse_duration",
]
