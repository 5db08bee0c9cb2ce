"""The deployment files, checked statically (tests/image/run.py runs the image and compose for real).

- The Dockerfile passes hadolint (installed from PyPI by the dev extra, where the platform has it)
  and, parsed here, has what the issue asks: a slim Python base, the package installed from a
  wheel built in a separate stage, a non-root user, /plugins as a mount point, a HEALTHCHECK on
  /healthz, and `executor run` as what the container runs.
- The wheel that stage builds carries the migrations, the built-in plugins and the dashboard.
- Every variable the example env files set (or show commented out) is a real setting, and the
  values load; the systemd unit and the compose file have the pieces the README promises, and the
  unit passes `systemd-analyze verify`.
"""

from __future__ import annotations

import configparser
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from executor.settings import Settings, load_settings

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
CONFIG = ROOT / "config"


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments dropped."""
    logical: list[str] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    assert not pending, "a continuation line runs off the end of the file"
    parsed = []
    for line in logical:
        keyword, _, rest = line.partition(" ")
        parsed.append((keyword.upper(), rest.strip()))
    return parsed


def stages(path: Path) -> list[list[tuple[str, str]]]:
    found: list[list[tuple[str, str]]] = []
    for keyword, rest in instructions(path):
        if keyword == "FROM":
            found.append([])
        if found:
            found[-1].append((keyword, rest))
    return found


def exec_form(arguments: str) -> list[str]:
    """The JSON array of an exec-form instruction (shell form is not accepted for these)."""
    value = json.loads(arguments)
    assert isinstance(value, list) and all(isinstance(part, str) for part in value), arguments
    return value


def test_dockerfile_passes_hadolint() -> None:
    hadolint = shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))
    if hadolint is None:
        pytest.skip("hadolint is not installed (the dev extra installs it on Linux x86-64)")
    done = subprocess.run(
        [hadolint, str(DOCKERFILE)], capture_output=True, text=True, check=False, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_dockerfile_runs_the_wheel_as_a_non_root_user() -> None:
    build, final = stages(DOCKERFILE)
    arg = next(rest for keyword, rest in instructions(DOCKERFILE) if keyword == "ARG")
    name, _, base = arg.partition("=")
    assert name == "PYTHON_IMAGE"
    assert re.fullmatch(r"python:3\.1[1-9]-slim(-\w+)?", base), base
    assert build[0][1] == "${PYTHON_IMAGE} AS build" and final[0][1] == "${PYTHON_IMAGE}"

    # The build stage makes a wheel; the final stage installs it and copies no source tree.
    assert any(k == "RUN" and "pip wheel" in r and "--wheel-dir /dist" in r for k, r in build)
    copies = [rest for keyword, rest in final if keyword == "COPY"]
    assert "--from=build /dist/ /tmp/dist/" in copies
    assert not any(re.match(r"(executor|migrations|\.)\b", rest) for rest in copies), copies
    install = next(rest for keyword, rest in final if keyword == "RUN" and "pip install" in rest)
    assert ".whl')[postgres]" in install and "--no-cache-dir" in install

    # A non-root user, created in the image and in force for everything the container runs.
    user_at = next(i for i, (keyword, _) in enumerate(final) if keyword == "USER")
    user = final[user_at][1]
    assert user.split(":")[0] not in ("root", "0"), user
    assert any(keyword == "RUN" and "useradd" in rest and "--uid 10001" in rest for keyword, rest in final)
    runs_after_user = [i for i, (keyword, _) in enumerate(final) if keyword == "RUN" and i > user_at]
    assert runs_after_user == []
    assert [keyword for keyword, _ in final].count("USER") == 1

    env = " ".join(rest for keyword, rest in final if keyword == "ENV")
    assert "EXECUTOR_PLUGINS_DIR=/plugins" in env
    assert "EXECUTOR_HTTP_ADDR=0.0.0.0:8420" in env
    assert ("COPY", "plugins/ /plugins/") in final  # the mount point, with the built-ins in it
    assert ("EXPOSE", "8420") in final
    assert ("STOPSIGNAL", "SIGTERM") in final


def test_dockerfile_healthcheck_and_entry_point() -> None:
    final = stages(DOCKERFILE)[-1]
    healthcheck = next(rest for keyword, rest in final if keyword == "HEALTHCHECK")
    options, _, command = healthcheck.partition("CMD ")
    assert "--interval=" in options and "--timeout=" in options
    assert exec_form(command) == ["python", "-m", "executor.http.probe", "/healthz"]
    entrypoint = exec_form(next(rest for keyword, rest in final if keyword == "ENTRYPOINT"))
    cmd = exec_form(next(rest for keyword, rest in final if keyword == "CMD"))
    assert entrypoint + cmd == ["executor", "run"]


def test_the_wheel_carries_migrations_plugins_and_the_dashboard(tmp_path: Path) -> None:
    """What the image's build stage builds, built here the same way (offline, with hatchling)."""
    pytest.importorskip("hatchling", reason="hatchling is in the dev extra")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "--wheel-dir",
            str(tmp_path),
            str(ROOT),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    [wheel] = tmp_path.glob("executor-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for expected in (
        "executor/http/static/index.html",
        "executor/http/static/app.js",
        "executor/http/static/style.css",
        "executor/http/probe.py",
        "executor/_migrations/env.py",
        "executor/_builtin_plugins/sleep.py",
        "executor/_builtin_plugins/echo.py",
    ):
        assert expected in names, expected
    assert any(name.startswith("executor/_migrations/versions/") for name in names)


# -- config/ ----------------------------------------------------------------------------------


def env_lines(path: Path) -> tuple[dict[str, str], dict[str, str]]:
    """(set, shown commented out) EXECUTOR_* assignments of an env file."""
    active, commented = {}, {}
    for line in path.read_text().splitlines():
        match = re.fullmatch(r"(#\s*)?(EXECUTOR_[A-Z0-9_]+)=(.*)", line.strip())
        if match:
            (commented if match.group(1) else active)[match.group(2)] = match.group(3)
    return active, commented


@pytest.mark.parametrize("name", ["executor.env.example", "executor-postgres.env.example"])
def test_env_examples_name_real_settings_with_valid_values(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    active, commented = env_lines(CONFIG / name)
    known = {"EXECUTOR_" + field.upper() for field in Settings.model_fields}
    unknown = sorted((set(active) | set(commented)) - known)
    assert unknown == [], f"{name} mentions variables that are no setting: {unknown}"
    for key in [key for key in os.environ if key.startswith("EXECUTOR_")]:
        monkeypatch.delenv(key)
    # As the daemon reads them: the file as it is, then with every commented example switched on.
    for values in (active, {**active, **commented}):
        env_file = tmp_path / "example.env"
        env_file.write_text("".join(f"{key}={value}\n" for key, value in values.items()))
        settings = load_settings(_env_file=str(env_file))
        assert settings.database_url == active["EXECUTOR_DATABASE_URL"]
    if name.startswith("executor-postgres"):
        assert active["EXECUTOR_DATABASE_URL"].startswith("postgresql+asyncpg://")
        assert "EXECUTOR_API_TOKEN" in active  # listening beyond loopback: a token is a must
    else:
        assert active["EXECUTOR_DATABASE_URL"].startswith("sqlite+aiosqlite:///")


def test_systemd_unit_restarts_on_failure_and_stops_with_sigterm() -> None:
    unit = configparser.ConfigParser(strict=True, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]  # systemd keys are case-sensitive
    unit.read(CONFIG / "executor.service")
    service = unit["Service"]
    program, *arguments = shlex.split(service["ExecStart"])
    assert (Path(program).name, arguments) == ("executor", ["run"])
    assert service["Restart"] == "on-failure"
    assert service["KillSignal"] == "SIGTERM"
    assert service["RestartPreventExitStatus"] == "2"  # invalid settings: a restart cannot help
    stop = int(service["TimeoutStopSec"].removesuffix("s"))
    assert stop > load_settings().shutdown_grace.total_seconds()
    assert service["User"] == "executor" and service["EnvironmentFile"] == "/etc/executor/executor.env"
    assert unit["Install"]["WantedBy"] == "multi-user.target"


def test_compose_runs_postgres_and_two_replicas() -> None:
    yaml = pytest.importorskip("yaml", reason="pyyaml is in the dev extra")
    compose = yaml.safe_load((CONFIG / "docker-compose.yml").read_text())
    services = compose["services"]
    # The image is a variable so that the image test can run a locally built one (no registry).
    assert services["postgres"]["image"] == "${POSTGRES_IMAGE:-postgres:16-bookworm}"
    assert "healthcheck" in services["postgres"]
    replicas = [
        name for name, service in services.items() if service.get("build") and name.startswith("executor-")
    ]
    assert replicas == ["executor-1", "executor-2"]
    for name in replicas:
        service = services[name]
        env = service["environment"]
        assert env["EXECUTOR_DATABASE_URL"].startswith("postgresql+asyncpg://")
        assert env["EXECUTOR_REPLICA_ID"] == name
        assert env["EXECUTOR_API_TOKEN"].startswith("${EXECUTOR_API_TOKEN:?")
        assert service["depends_on"]["postgres"]["condition"] == "service_healthy"
        assert service["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
        assert service["volumes"] == ["../plugins:/plugins:ro"]
        grace = int(str(service["stop_grace_period"]).removesuffix("s"))
        assert grace > load_settings().shutdown_grace.total_seconds()
    assert services["migrate"]["command"] == ["migrate"]
    ports = {p for name in replicas for p in services[name]["ports"]}
    assert ports == {"127.0.0.1:${EXECUTOR_1_PORT:-8421}:8420", "127.0.0.1:${EXECUTOR_2_PORT:-8422}:8420"}
    assert services["migrate"]["build"] == services["executor-1"]["build"]
    assert services["executor-1"]["build"]["args"] == {
        "PYTHON_IMAGE": "${PYTHON_IMAGE:-python:3.11-slim-bookworm}"
    }


def verify_unit(unit_text: str, root: Path) -> str:
    """What `systemd-analyze verify` says about the unit, installed under a scratch root.

    The root has the host's own units (for the targets the unit names) and an executable at
    ExecStart's path, which verify requires to exist. It exits 0 even for an unknown key or a bad
    value and only prints them, so the output is the verdict: empty means clean.
    """
    (root / "usr/lib/systemd").mkdir(parents=True)
    shutil.copytree("/usr/lib/systemd/system", root / "usr/lib/systemd/system", symlinks=True)
    program = root / "opt/executor/bin/executor"
    program.parent.mkdir(parents=True)
    program.write_text("#!/bin/sh\nexit 0\n")
    program.chmod(0o755)
    (root / "etc/systemd/system").mkdir(parents=True)
    (root / "etc/systemd/system/executor.service").write_text(unit_text)
    done = subprocess.run(
        ["systemd-analyze", "verify", f"--root={root}", "executor.service"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    return (
        f"exit {done.returncode}: {done.stdout}{done.stderr}"
        if done.returncode
        else done.stdout + done.stderr
    )


def test_systemd_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    if shutil.which("systemd-analyze") is None or not Path("/usr/lib/systemd/system/sysinit.target").exists():
        pytest.skip("systemd-analyze and the system's units are not here")
    unit = (CONFIG / "executor.service").read_text()
    assert verify_unit(unit, tmp_path / "clean") == ""
    # The check is not blind: a misspelt key and a bad value are reported.
    broken = unit.replace("KillMode=", "KilMode=").replace("Restart=on-failure", "Restart=sometimes")
    said = verify_unit(broken, tmp_path / "broken")
    assert "Unknown key 'KilMode'" in said and "sometimes" in said, said
