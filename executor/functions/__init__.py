"""Function tasks: an ordinary Python function, decorated, is a task type.

    from executor.functions import PermanentError, task

    @task("resize-image", max_attempts=3, timeout="5m")
    def resize_image(path: str, width: int = 256) -> dict[str, str]: ...

    execution_id = await resize_image.submit(client, path="cat.png")

The decorator builds and registers an ordinary plugin (`FunctionPlugin`) on the public contract
(`executor.core`): async functions run on the daemon's loop, sync ones on its bounded thread pool,
and `cpu=True` ones in its worker processes. See the README, "Function tasks".
"""

from executor.functions.plugin import FunctionPlugin, PermanentError
from executor.functions.signature import CallShape, FunctionSignatureError
from executor.functions.task import FunctionTask, Submitter, task

__all__ = [
    "CallShape",
    "FunctionPlugin",
    "FunctionSignatureError",
    "FunctionTask",
    "PermanentError",
    "Submitter",
    "task",
]
