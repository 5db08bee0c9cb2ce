"""Function tasks for tests/test_function_tasks*.py: one of each kind, loaded by the real daemon.

The module imports only the public API, as a user's would. What the inputs may ask for:
- `fn-cpu`: `gate`, a file: the call burns CPU until it exists (so that a test can SIGKILL the
  worker mid-call); `pid_file`: where the call writes its worker's pid first.
- `fn-flaky`: fails its first attempt (a retryable RuntimeError), succeeds on the second.
"""

import asyncio
import os
import threading
import time
from pathlib import Path

from pydantic import BaseModel

from executor.core import TaskExecutionContext
from executor.functions import PermanentError, task

GATE_SECONDS = 60.0


class Greeting(BaseModel):
    name: str
    times: int = 1


class Greeted(BaseModel):
    text: str
    thread: str


@task("fn-async", input_model=Greeting, output_model=Greeted)
async def greet(inputs: Greeting) -> Greeted:
    await asyncio.sleep(0)  # it awaits, on the daemon's loop
    return Greeted(
        text=" ".join([f"hello {inputs.name}"] * inputs.times), thread=threading.current_thread().name
    )


@task("fn-sync", max_attempts=2, timeout="30s")
def shout(word: str, repeat: int = 2) -> dict[str, object]:
    time.sleep(0.01)  # blocks: on the daemon's thread pool, not its loop
    return {"text": (word.upper() + "!") * repeat, "thread": threading.current_thread().name}


def burn(gate: str, pid_file: str) -> int:
    if pid_file:
        Path(pid_file).write_text(str(os.getpid()))
    total, started = 0, time.monotonic()
    while gate and not Path(gate).exists() and time.monotonic() - started < GATE_SECONDS:
        total += sum(i * i for i in range(10_000))
    return total


@task("fn-cpu", cpu=True)
def crunch(n: int, gate: str = "", pid_file: str = "") -> dict[str, int]:
    burn(gate, pid_file)
    return {"sum": sum(i * i for i in range(n)), "pid": os.getpid()}


class BadInputError(ValueError):
    pass


@task("fn-permanent", max_attempts=3, permanent=(BadInputError,))
async def refuse(kind: str) -> None:
    if kind == "declared":
        raise BadInputError("width must be positive")
    raise PermanentError("the image is corrupt")


@task("fn-flaky", max_attempts=2)
async def flaky(context: TaskExecutionContext) -> int:
    if context.task_execution_metadata.attempt == 1:
        raise RuntimeError("the first attempt always fails")
    return context.task_execution_metadata.attempt


class Bucket(BaseModel):
    bucket: str
    region: str = "eu-west-1"


@task("fn-config", config_model=Bucket)
async def where(key: str, config: Bucket) -> dict[str, str]:
    return {"url": f"s3://{config.bucket}/{key}", "region": config.region}


@task("fn-slow", timeout="1s", max_attempts=1)
async def slow(seconds: float) -> None:
    await asyncio.sleep(seconds)
