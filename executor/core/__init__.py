"""The contract plugin authors import. No I/O here: only the shapes a plugin reads and returns."""

from executor.core.config import PluginConfigError, config_problems, validate_plugin_config
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
    BackgroundTasks,
    LoadPlugin,
    Plugin,
    PluginEntry,
    PluginProperties,
    ResourceRegistrar,
    SetupContext,
    StartContext,
)
from executor.core.transition import UNKNOWN_TRANSITION, Transition, TransitionType, do_transition

__all__ = [
    "FINAL_PHASES",
    "UNKNOWN_TRANSITION",
    "BackgroundTasks",
    "ErrorKind",
    "ExecutionError",
    "InputReader",
    "LoadPlugin",
    "Logger",
    "OutputWriter",
    "Phase",
    "PhaseInfo",
    "Plugin",
    "PluginConfigError",
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
    "StartContext",
    "TaskExecutionContext",
    "TaskExecutionMetadata",
    "TaskInfo",
    "TaskLog",
    "Transition",
    "TransitionType",
    "config_problems",
    "do_transition",
    "parse_duration",
    "validate_plugin_config",
]
