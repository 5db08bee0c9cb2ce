"""The context each plugin call gets: one per execution per round, its costly parts made on first use."""

from __future__ import annotations

import functools
from typing import Any

from executor.core import Logger, Plugin
from executor.core.records import ExecutionRecord
from executor.plugin.registry import LoadedPlugins
from executor.plugin.task_exec_context import SecretManager, TaskExecContext
from executor.redaction import REDACTOR
from executor.settings import Settings
from executor.store.quotas import SqlResourceManager


class Contexts:
    """Makes each call's `TaskExecContext`: built for every execution of every round, so it only
    stores what it was given; the logger and the resource manager are made when first asked for."""

    def __init__(
        self, settings: Settings, plugins: LoadedPlugins, quotas: SqlResourceManager, log: Any
    ) -> None:
        self._max_state_bytes = settings.max_plugin_state_bytes
        self._max_payload_bytes = settings.max_payload_bytes
        self._quotas = quotas
        self._secrets = SecretManager(settings.secret_env_prefix, settings.secrets_dir, on_read=REDACTOR.add)
        self._log = log
        # The plugins and their models are fixed once loaded: each task type is resolved once.
        self._output_model_for = functools.cache(plugins.resolver.output_model_for)

    def build(self, record: ExecutionRecord, plugin: Plugin, number: int) -> TaskExecContext:
        return TaskExecContext(
            record,
            properties=plugin.properties,
            max_state_bytes=self._max_state_bytes,
            resource_manager=functools.partial(self._quotas.for_execution, record.id),
            secret_manager=self._secrets,
            output_model=self._output_model_for(record.task_type),
            max_payload_bytes=self._max_payload_bytes,
            logger=functools.partial(self._execution_logger, record, number),
        )

    def _execution_logger(self, record: ExecutionRecord, number: int) -> Logger:
        """`tctx.logger`: made when a plugin first logs, its lines carrying the execution's ids."""
        bound: Logger = self._log.bind(
            execution_id=record.id, task_type=record.task_type, attempt=record.attempt, round=number
        )
        return bound
