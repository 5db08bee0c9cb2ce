"""A plugin's configuration: `EXECUTOR_PLUGIN_CONFIG[plugin id]`, validated against the model the
plugin declares (`PluginEntry.config_model`), or by the kit against its own (`WebApiConfig`).

One helper says what is wrong, so that every plugin's bad value stops the start-up with the same
one line: `invalid configuration for plugin 'x': field: message; ...` (never the value itself, which
may be a secret).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

ConfigT = TypeVar("ConfigT", bound=BaseModel)


class PluginConfigError(ValueError):
    """A plugin's configuration does not fit its model; raised while the plugin loads."""


def config_problems(err: ValidationError) -> str:
    """Pydantic's errors as `field.path: message; ...`, without the offending values."""
    return "; ".join(
        f"{'.'.join(str(part) for part in error['loc']) or '(root)'}: {error['msg']}"
        for error in err.errors(include_url=False, include_input=False)
    )


def config_error(plugin_id: str, err: ValidationError) -> PluginConfigError:
    return PluginConfigError(f"invalid configuration for plugin {plugin_id!r}: {config_problems(err)}")


def validate_plugin_config(plugin_id: str, model: type[ConfigT], value: Mapping[str, Any] | None) -> ConfigT:
    """`value` (None: not configured, the model's defaults) as an instance of `model`; raises
    `PluginConfigError` naming the plugin and the fields."""
    try:
        return model.model_validate(dict(value) if value is not None else {})
    except ValidationError as err:
        raise config_error(plugin_id, err) from None
    except TypeError as err:  # not a mapping at all
        raise PluginConfigError(f"invalid configuration for plugin {plugin_id!r}: {err}") from None
