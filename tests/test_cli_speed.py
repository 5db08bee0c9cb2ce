"""The command line starts quickly, and stays so: `executor --help`, `get`, `list`, `events` and
`submit` import only what they need (issue 17: every command used to take 0.55-0.85 s, most of it
importing the store, Alembic and the plugins whatever the command).

Two guards, both on real `python -m executor` processes:
- what each command imports (exact, and immune to the machine's load): `--help` imports no library
  beyond the standard one; `get`, `list` and `events` no Alembic, no plugin, no daemon; `submit`
  the plugins (it checks task types and inputs against them) but no Alembic and no daemon;
- the start-up's cost as a ratio to a baseline measured in the same test: the median CPU time (user +
  system, which a loaded machine inflates far less than wall time) of several runs. `--help` against
  `python -c pass`; `get` against importing the libraries it cannot do without (SQLAlchemy, the
  settings, structlog, anyio). The bounds are generous: they catch creep, not noise.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from executor.store import Store
from executor.store.migrate import MIGRATIONS_DIR, _scanned_head, current_revision, head_revision, upgrade

UNKNOWN_ID = "00000000-0000-0000-0000-000000000000"
BUILTIN_PLUGINS = Path(__file__).resolve().parent.parent / "plugins"
RUNS = 5

#: Never imported by `executor --help`: it only builds the parser.
HELP_NEVER = ("sqlalchemy", "pydantic", "pydantic_settings", "structlog", "anyio", "alembic", "rich")
#: Never imported by the commands that read the store.
READ_NEVER = (
    "alembic",
    "executor.plugin.loader",
    "executor.daemon",
    "executor.runtime",
    "executor.http",
    "httpx",
)
#: Never imported by `submit`, which loads the plugin modules but runs no daemon and no migration.
SUBMIT_NEVER = ("alembic", "executor.daemon", "executor.runtime", "executor.http")
#: What a command that reads the store cannot do without: its baseline.
LIBRARIES = "import sqlalchemy.ext.asyncio, aiosqlite, pydantic_settings, structlog, anyio"


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    # Compiled modules are cached, as on a user's machine (this environment may turn that off):
    # otherwise each run would measure compiling executor's own modules, which no user pays twice.
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("EXECUTOR_") and key != "PYTHONDONTWRITEBYTECODE"
    }
    env.update(
        EXECUTOR_DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path}/executor.db",
        EXECUTOR_PLUGINS_DIR=str(BUILTIN_PLUGINS),
        EXECUTOR_PLUGIN_ENTRY_POINTS="false",
        EXECUTOR_LOG_FORMAT="json",
    )

    async def migrate() -> None:
        store = Store.from_url(env["EXECUTOR_DATABASE_URL"])
        try:
            await upgrade(store.engine)
        finally:
            await store.close()

    asyncio.run(migrate())
    return env


def imported_by(env: dict[str, str], cwd: Path, *argv: str) -> tuple[int, set[str]]:
    """Run `python -m executor ARGV` and return its exit code and the modules it had imported."""
    listing = cwd / "modules.json"
    program = (
        "import atexit, json, runpy, sys\n"
        f"atexit.register(lambda: open({str(listing)!r}, 'w').write(json.dumps(sorted(sys.modules))))\n"
        f"sys.argv = ['executor', *{list(argv)!r}]\n"
        "runpy.run_module('executor', run_name='__main__')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", program],
        check=False,
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return done.returncode, set(json.loads(listing.read_text()))


def loaded(modules: set[str], forbidden: tuple[str, ...]) -> list[str]:
    return sorted(m for m in modules if any(m == f or m.startswith(f + ".") for f in forbidden))


def test_each_command_imports_only_what_it_needs(env: dict[str, str], tmp_path: Path) -> None:
    code, modules = imported_by(env, tmp_path, "--help")
    assert code == 0
    assert loaded(modules, HELP_NEVER) == []
    assert "executor.store" not in modules

    for argv in (["get", UNKNOWN_ID], ["list"], ["events", UNKNOWN_ID], ["list", "--json"]):
        code, modules = imported_by(env, tmp_path, *argv)
        assert code in (0, 1), argv  # 1: no execution with that id, said after a real read
        assert "executor.store" in modules  # it did read the store
        assert loaded(modules, READ_NEVER) == [], argv

    code, modules = imported_by(env, tmp_path, "submit", "echo", "--inputs", '{"greeting": "hi"}')
    assert code == 0
    assert "executor.plugin.loader" in modules  # submissions are checked against the plugins
    assert loaded(modules, SUBMIT_NEVER) == []


def cpu_seconds(argv: list[str], env: dict[str, str], cwd: Path) -> float:
    """User + system CPU time of one process, from the kernel's accounting of it."""
    process = subprocess.Popen(
        argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    return usage.ru_utime + usage.ru_stime


def median_cpu(argv: list[str], env: dict[str, str], cwd: Path) -> float:
    cpu_seconds(argv, env, cwd)  # a first run writes the compiled modules
    return statistics.median(cpu_seconds(argv, env, cwd) for _ in range(RUNS))


def test_start_up_stays_a_small_multiple_of_its_baseline(env: dict[str, str], tmp_path: Path) -> None:
    python = sys.executable
    bare = median_cpu([python, "-c", "pass"], env, tmp_path)
    helped = median_cpu([python, "-m", "executor", "--help"], env, tmp_path)
    libraries = median_cpu([python, "-c", LIBRARIES], env, tmp_path)
    got = median_cpu([python, "-m", "executor", "get", "--json", UNKNOWN_ID], env, tmp_path)
    figures = f"pass {bare:.3f}s, --help {helped:.3f}s, libraries {libraries:.3f}s, get {got:.3f}s CPU"
    # Measured here: --help about 5x `pass` (about 75x when it imported the store, Alembic and the
    # plugins); get about 1.1x its libraries (1.3-1.4x before). The floor keeps a 10 ms clock tick from
    # turning a tiny baseline into a huge ratio.
    assert helped <= 10 * max(bare, 0.02), figures
    assert got <= 1.3 * libraries + 0.05, figures


def test_the_schema_check_reads_the_head_as_alembic_does(tmp_path: Path) -> None:
    """The fast path that spares every command Alembic agrees with Alembic, or steps aside."""
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    alembic_head = ScriptDirectory.from_config(config).get_current_head()
    assert _scanned_head() == alembic_head == head_revision()

    async def revisions() -> tuple[str | None, str | None]:
        store = Store.from_url(f"sqlite+aiosqlite:///{tmp_path}/fresh.db")
        try:
            before = await current_revision(store.engine)
            await upgrade(store.engine)
            return before, await current_revision(store.engine)
        finally:
            await store.close()

    assert asyncio.run(revisions()) == (None, alembic_head)
