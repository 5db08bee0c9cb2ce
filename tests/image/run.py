"""The image test: the Dockerfile and the compose file run for real (issue 19).

`make image-test` runs this as root (dockerd, debootstrap and apt need it); `make test` and CI run
it too. `EXECUTOR_SKIP_IMAGE_TEST=1` skips it (CI unsets that). What it does, every wait under a
deadline:

1. installs Debian's docker.io, docker-compose and debootstrap when they are missing;
2. starts a private Docker daemon: its own socket, data root and exec root under RUN_DIR, its own
   containerd, no iptables, no IP forwarding, no default bridge (containers on its user-defined
   bridges reach each other and the host's loopback through published ports, nothing else); a
   daemon left over by a run that was killed is stopped first, by the pid it recorded;
3. imports a base image: Debian bookworm with Debian's Python 3.11, built once with debootstrap
   from the mirror apt uses here and cached in CACHE_DIR (no image registry answers here), and a
   PostgreSQL image on it for compose (built once, cached as a `docker save` archive);
4. builds the project's image on that base (`--network host`: pip reaches the index pip uses here)
   and checks it: the non-root user, no source tree;
5. runs it as a user would: a volume, a token, a published port on 127.0.0.1; waits for Docker's
   HEALTHCHECK to say healthy; runs an execution to SUCCESS over the port; `docker stop` exits 0
   within the shutdown grace; a second container on the same volume still has the execution;
6. runs config/docker-compose.yml (PostgreSQL and two replicas; the compose file's variables pick
   the images and free ports, tests/image/compose.test.yml adds a test plugin and shortens the
   lease): replica 1 takes work and is killed (SIGKILL) in the middle of it; replica 2 finishes it
   once the leases lapse;
7. removes what it created and stops the daemon, whatever happened.

Figures (image size, start-up to healthy, step times) go to stdout and to
test-artifacts/image-test/summary.json, with the daemon's and the containers' logs beside it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
CACHE_DIR = Path(os.environ.get("EXECUTOR_IMAGE_TEST_CACHE", "/var/cache/executor-image-test"))
RUN_DIR = Path(os.environ.get("EXECUTOR_IMAGE_TEST_RUN_DIR", "/var/tmp/executor-image-test"))
ARTIFACTS = ROOT / "test-artifacts" / "image-test"
PROJECT = "executor-image-test"  # names of everything created in the daemon start with this

SUITE = "bookworm"
BASE_PACKAGES = ["python3", "python3-pip", "python-is-python3", "ca-certificates"]
# Bump when the recipe in build_base_rootfs changes: it is part of the cache key.
BASE_RECIPE = "3"
# What the test runs, and the Debian package that brings it when it is missing.
APT_PACKAGES = {
    "/usr/sbin/dockerd": "docker.io",
    "/usr/bin/docker-compose": "docker-compose",
    "/usr/sbin/debootstrap": "debootstrap",
    "/usr/share/keyrings/debian-archive-keyring.gpg": "debian-archive-keyring",
}

SHUTDOWN_GRACE = 30.0  # EXECUTOR_SHUTDOWN_GRACE's default, which the image keeps
STOP_TIMEOUT = 45  # docker stop -t, as the README says
LEASE_TTL = 20.0  # tests/image/compose.test.yml
FENCE_HOLD = "12s"
REPLICA_IN_INFO = re.compile(r'"replica": "([^"]*)"')  # the fence plugin's round info names its replica

T = TypeVar("T")


class CheckFailed(Exception):  # noqa: N818  (a failed check, not an error in the test)
    """A check that did not hold; the message says which."""


# -- running things, with deadlines -------------------------------------------------------------

_started = time.monotonic()
summary: dict[str, Any] = {"steps": {}}


def say(message: str) -> None:
    print(f"[image-test {time.monotonic() - _started:6.1f}s] {message}", flush=True)


@contextlib.contextmanager
def step(name: str) -> Iterator[None]:
    say(f"== {name}")
    began = time.monotonic()
    try:
        yield
    finally:
        took = round(time.monotonic() - began, 1)
        summary["steps"][name] = took
        say(f"   {name}: {took}s")


def run(
    args: list[str],
    *,
    timeout: float,
    check: bool = True,
    env: dict[str, str] | None = None,
    quiet: bool = False,
) -> subprocess.CompletedProcess[str]:
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False, env=env)
    except subprocess.TimeoutExpired as err:
        raise CheckFailed(f"timed out after {timeout:.0f}s: {' '.join(args)}") from err
    if check and done.returncode != 0:
        raise CheckFailed(
            f"exit {done.returncode}: {' '.join(args)}\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
        )
    if not quiet and done.returncode != 0:
        say(f"   (exit {done.returncode}) {' '.join(args)}: {done.stderr.strip()[-500:]}")
    return done


def wait_for(what: str, probe: Callable[[], T | None], timeout: float, interval: float = 0.5) -> T:
    """Poll until `probe` returns something true; a connection error counts as not yet."""
    deadline = time.monotonic() + timeout
    last_error = ""
    while True:
        try:
            value = probe()
        except (OSError, ValueError) as err:  # a refused or reset connection, a truncated answer
            value, last_error = None, f" (last: {err!r})"
        if value:
            return value
        if time.monotonic() > deadline:
            raise CheckFailed(f"timed out after {timeout:.0f}s waiting for {what}{last_error}")
        time.sleep(interval)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- HTTP to a published port -------------------------------------------------------------------


def http(
    method: str, url: str, token: str | None = None, body: Any = None, timeout: float = 5
) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            status, raw = answer.status, answer.read()
    except urllib.error.HTTPError as err:
        status, raw = err.code, err.read()
    try:
        return status, json.loads(raw) if raw else None
    except ValueError:
        return status, raw.decode(errors="replace")


def answers(url: str) -> bool:
    try:
        return http("GET", url, timeout=2)[0] == 200
    except OSError:
        return False


# -- tools and the private daemon ---------------------------------------------------------------


def ensure_packages() -> None:
    missing = [package for path, package in APT_PACKAGES.items() if not Path(path).exists()]
    if not missing:
        return
    say(f"installing Debian's {', '.join(missing)}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    run(["apt-get", "update", "-qq"], timeout=600, env=env)
    run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing], timeout=900, env=env)


def docker_cli() -> str:
    # Debian's client matches Debian's daemon; another `docker` earlier on PATH may be newer.
    return "/usr/bin/docker" if Path("/usr/bin/docker").exists() else shutil.which("docker") or "docker"


class Docker:
    def __init__(self, host: str) -> None:
        self.host = host
        self.cli = docker_cli()
        self.env = {**os.environ, "DOCKER_HOST": host, "DOCKER_BUILDKIT": "0"}

    def __call__(
        self, *args: str, timeout: float = 60, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        return run([self.cli, *args], timeout=timeout, check=check, env=self.env)

    def answers(self) -> bool:
        return run([self.cli, "version"], timeout=10, check=False, env=self.env, quiet=True).returncode == 0

    def inspect(self, name: str) -> dict[str, Any]:
        return json.loads(self("inspect", name).stdout)[0]  # type: ignore[no-any-return]

    def health(self, name: str) -> str:
        state = self.inspect(name)["State"]
        if not state["Running"]:
            raise CheckFailed(f"container {name} is not running: {state}")
        return str(state.get("Health", {}).get("Status", "none"))

    def save_logs(self, name: str) -> None:
        done = self("logs", "--timestamps", name, check=False)
        (ARTIFACTS / f"{name}.log").write_text(done.stdout + done.stderr)


def processes_under(directory: Path) -> dict[int, bytes]:
    """Processes this test started earlier, pid -> command line: those whose command lines name its
    run directory (dockerd, its containerd and shims), and their descendants (docker-proxy)."""
    commands: dict[int, bytes] = {}
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            pid = int(entry.name)
            commands[pid] = (entry / "cmdline").read_bytes()
            parents[pid] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
    ours = {pid for pid, command in commands.items() if str(directory).encode() in command}
    grown = True
    while grown:
        children = {pid for pid, parent in parents.items() if parent in ours} - ours
        ours |= children
        grown = bool(children)
    return {pid: commands[pid] for pid in ours}


def _command(pid: int) -> bytes | None:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes() or None  # a zombie's is empty
    except OSError:
        return None


def mounts_under(directory: Path) -> list[str]:
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].encode().decode("unicode_escape")
        if point.startswith(f"{directory}/"):
            points.append(point)
    return sorted(points, key=len, reverse=True)


def delete_bridges() -> None:
    """Bridges the daemon made for its networks, which a killed daemon leaves behind."""
    record = RUN_DIR / "bridges"
    if not record.exists():
        return
    for name in sorted(set(record.read_text().split())):
        if Path(f"/sys/class/net/{name}").exists():
            run(["ip", "link", "delete", name], timeout=10, check=False)


def clean_run_dir() -> None:
    """Stop whatever an earlier run left (by pid), unmount, delete. Our own files only."""
    left = processes_under(RUN_DIR)
    if left:
        # dockerd first, alone: it stops its containers, proxies and containerd on SIGTERM.
        dockerds = [pid for pid, command in left.items() if command.startswith(b"dockerd")]
        for pid in dockerds:
            say(f"   SIGTERM to the left-over dockerd {pid}")
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        with contextlib.suppress(CheckFailed):
            wait_for(
                "the left-over dockerd to stop", lambda: not set(dockerds) & set(processes_under(RUN_DIR)), 40
            )
    for sig in (signal.SIGTERM, signal.SIGKILL):
        # What is still here of the processes found before, if each still runs the same command.
        now = processes_under(RUN_DIR)
        pids = [
            pid
            for pid in sorted(set(left) | set(now))
            if (command := _command(pid)) is not None and command in (left.get(pid), now.get(pid))
        ]
        for pid in pids:
            say(f"   {sig.name} to {pid}: {(_command(pid) or b'')[:120]!r}")
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        if pids:
            with contextlib.suppress(CheckFailed):
                wait_for("left-over processes to end", lambda p=pids: not any(_command(i) for i in p), 20)
    for point in mounts_under(RUN_DIR):
        run(["umount", "-l", point], timeout=30, check=False)
    delete_bridges()
    if RUN_DIR.exists():  # --one-file-system: never through a mount that was missed
        run(["rm", "-rf", "--one-file-system", str(RUN_DIR)], timeout=600)


@contextlib.contextmanager
def private_daemon() -> Iterator[Docker]:
    clean_run_dir()
    RUN_DIR.mkdir(parents=True)  # the daemon's, and the test's scratch files either way
    external = os.environ.get("EXECUTOR_IMAGE_TEST_DOCKER_HOST")
    if external:
        docker = Docker(external)
        if not docker.answers():
            raise CheckFailed(f"EXECUTOR_IMAGE_TEST_DOCKER_HOST={external} does not answer")
        say(f"using the Docker engine at {external}")
        try:
            yield docker
        finally:
            remove_ours(docker)
            clean_run_dir()
        return
    socket_path = RUN_DIR / "docker.sock"
    args = [
        "dockerd",
        f"--data-root={RUN_DIR / 'root'}",
        f"--exec-root={RUN_DIR / 'exec'}",
        f"--host=unix://{socket_path}",
        f"--pidfile={RUN_DIR / 'dockerd.pid'}",
        # Private containerd state too, in case a system containerd is found and shared.
        f"--containerd-namespace={PROJECT}",
        f"--containerd-plugins-namespace={PROJECT}-plugins",
        # No default bridge, no NAT and no forwarding: the host's firewall and sysctls stay as
        # they are, and containers reach nothing beyond this host.
        "--bridge=none",
        "--iptables=false",
        "--ip-forward=false",
        "--ip-masq=false",
        "--log-level=info",
    ]
    driver = os.environ.get("EXECUTOR_IMAGE_TEST_STORAGE_DRIVER")  # default: dockerd's choice
    if driver:
        args.append(f"--storage-driver={driver}")
    log = (RUN_DIR / "dockerd.log").open("w")
    process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    docker = Docker(f"unix://{socket_path}")
    try:
        wait_for("the private dockerd to answer", lambda: process.poll() is not None or docker.answers(), 60)
        if process.poll() is not None:
            raise CheckFailed(f"dockerd exited {process.returncode}: see {ARTIFACTS / 'dockerd.log'}")
        info = json.loads(docker("info", "--format", "{{json .}}").stdout)
        summary["docker"] = {"server": info["ServerVersion"], "storage_driver": info["Driver"]}
        say(f"private dockerd {info['ServerVersion']} ({info['Driver']}) on {socket_path}")
        yield docker
    finally:
        stop_daemon(docker, process)
        log.close()


def remove_ours(docker: Docker) -> None:
    """On an engine that is not ours: remove what this test made there, all named PROJECT*."""
    with contextlib.suppress(CheckFailed):
        for listing, removal in (
            (["ps", "-aq", "--filter", f"name={PROJECT}"], ["rm", "-f", "-v"]),
            (["volume", "ls", "-q", "--filter", f"name={PROJECT}"], ["volume", "rm", "-f"]),
            (["network", "ls", "-q", "--filter", f"name={PROJECT}"], ["network", "rm"]),
        ):
            found = sorted(set(docker(*listing).stdout.split()))
            if found:
                docker(*removal, *found, timeout=180, check=False)
        # By tag, the base last: the images built on it must go first.
        listing = ["images", "--format", "{{.Repository}}:{{.Tag}}", "--filter", f"reference={PROJECT}*"]
        tags = sorted(set(docker(*listing).stdout.split()), key=lambda tag: "-base:" in tag)
        for base in [tag for tag in tags if "-base:" in tag]:  # the build stage, left untagged
            since = ["images", "-q", "--filter", "dangling=true", "--filter", f"since={base}"]
            dangling = docker(*since).stdout.split()
            if dangling:
                docker("image", "rm", *dangling, timeout=180, check=False)
        if tags:
            docker("image", "rm", *tags, timeout=180, check=False)
        say("   removed this test's containers, volumes, networks and images from that engine")


def stop_daemon(docker: Docker, process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(CheckFailed, OSError):
        if process.poll() is None:
            ids = docker("ps", "-aq", timeout=30).stdout.split()
            if ids:
                docker("rm", "-f", *ids, timeout=120, check=False)
            for network in docker(
                "network", "ls", "-q", "--filter", "type=custom", timeout=30
            ).stdout.split():
                docker("network", "rm", network, timeout=30, check=False)
    say("   stopping the private dockerd")
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
    say(f"   dockerd exited {process.returncode}")
    with contextlib.suppress(OSError):
        shutil.copy(RUN_DIR / "dockerd.log", ARTIFACTS / "dockerd.log")
    clean_run_dir()
    say("private dockerd stopped and its run directory removed")


def record_bridges(docker: Docker) -> None:
    ids = docker("network", "ls", "-q", "--no-trunc", "--filter", "type=custom").stdout.split()
    with (RUN_DIR / "bridges").open("a") as record:
        record.writelines(f"br-{network[:12]}\n" for network in ids)


# -- the cached base images ---------------------------------------------------------------------


def apt_mirrors() -> tuple[str, str]:
    """The Debian and Debian security mirrors apt uses on this machine (from `apt-cache policy`)."""
    debian, security = "http://deb.debian.org/debian", "http://deb.debian.org/debian-security"
    policy = run(["apt-cache", "policy"], timeout=60).stdout
    for line in policy.splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[1].startswith(("http://", "https://")):
            if parts[2] == f"{SUITE}/main":
                debian = parts[1].rstrip("/")
            elif parts[2] == f"{SUITE}-security/main":
                security = parts[1].rstrip("/")
    return (
        os.environ.get("EXECUTOR_IMAGE_TEST_MIRROR", debian),
        os.environ.get("EXECUTOR_IMAGE_TEST_SECURITY_MIRROR", security),
    )


def local_cas() -> list[Path]:
    """Certificate authorities this machine adds (a TLS-inspecting proxy's): the base trusts them."""
    return sorted(Path("/usr/local/share/ca-certificates").glob("**/*.crt"))


def base_key(mirror: str, security: str) -> str:
    digest = hashlib.sha256()
    for part in (BASE_RECIPE, SUITE, " ".join(BASE_PACKAGES), mirror, security):
        digest.update(part.encode() + b"\0")
    for ca in local_cas():
        digest.update(ca.read_bytes())
    return digest.hexdigest()[:12]


def chroot(rootfs: Path, *args: str, timeout: float = 600) -> None:
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "DEBIAN_FRONTEND": "noninteractive", "LC_ALL": "C"}
    run(["chroot", str(rootfs), *args], timeout=timeout, env=env)


def build_base_rootfs(target: Path, mirror: str, security: str) -> None:
    """Debian bookworm, minimal, with Debian's Python 3.11 and pip, as one tar for `docker import`.

    It stands in for python:3.11-slim-bookworm: `python` and `pip` on PATH, and pip may install
    system-wide (Debian's EXTERNALLY-MANAGED marker is removed; the image is single-purpose).
    """
    rootfs = RUN_DIR / "rootfs"
    run(
        [
            "debootstrap",
            "--variant=minbase",
            f"--include={','.join(BASE_PACKAGES)}",
            SUITE,
            str(rootfs),
            mirror,
        ],
        timeout=1200,
    )
    (rootfs / "etc/apt/sources.list").write_text(
        f"deb {mirror} {SUITE} main\n"
        f"deb {mirror} {SUITE}-updates main\n"
        f"deb {security} {SUITE}-security main\n"
    )
    (rootfs / "etc/dpkg/dpkg.cfg.d/01-slim").write_text(
        "".join(
            f"path-exclude=/usr/share/{d}/*\n" for d in ("doc", "man", "info", "locale", "lintian", "linda")
        )
    )
    (rootfs / "etc/apt/apt.conf.d/01-slim").write_text(
        'APT::Install-Recommends "false";\nAPT::Install-Suggests "false";\n'
    )
    for ca in local_cas():
        shutil.copy(ca, rootfs / "usr/local/share/ca-certificates" / ca.name)
    shutil.copy("/etc/resolv.conf", rootfs / "etc/resolv.conf")
    run(["mount", "-t", "proc", "proc", str(rootfs / "proc")], timeout=30)
    try:
        chroot(rootfs, "apt-get", "update", "-qq")
        chroot(rootfs, "apt-get", "upgrade", "-y", "-qq")  # bookworm-security's fixes
        chroot(rootfs, "update-ca-certificates")
        chroot(rootfs, "apt-get", "clean")
    finally:
        run(["umount", str(rootfs / "proc")], timeout=30)
    for marker in rootfs.glob("usr/lib/python3*/EXTERNALLY-MANAGED"):
        marker.unlink()
    (rootfs / "etc/resolv.conf").write_text("")  # Docker provides its own
    for junk in ("var/lib/apt/lists", "usr/share/doc", "usr/share/man", "usr/share/info", "usr/share/locale"):
        for path in (rootfs / junk).glob("*"):
            shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
    for log in (rootfs / "var/log").rglob("*"):
        if log.is_file():
            log.unlink()
    partial = target.with_suffix(".partial")
    run(["tar", "--numeric-owner", "-C", str(rootfs), "-cf", str(partial), "."], timeout=600)
    partial.rename(target)
    shutil.rmtree(rootfs)


def prune_cache(keep: set[Path]) -> None:
    for path in CACHE_DIR.glob("*.tar"):
        if path not in keep:
            say(f"   removing the stale cached {path.name}")
            path.unlink()


def ensure_base_images(docker: Docker) -> tuple[str, str]:
    """(base tag, postgres tag): imported from the cache, built into it first when missing."""
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    mirror, security = apt_mirrors()
    key = base_key(mirror, security)
    base_tar = CACHE_DIR / f"base-{SUITE}-{key}.tar"
    base_tag = f"{PROJECT}-base:{key}"
    summary["base_cached"] = base_tar.exists()
    if not base_tar.exists():
        say(f"building the base with debootstrap from {mirror} (once; cached in {base_tar})")
        build_base_rootfs(base_tar, mirror, security)
    docker(
        "import",
        "--change",
        "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "--change",
        "ENV LANG=C.UTF-8",
        "--change",
        'CMD ["python3"]',
        str(base_tar),
        base_tag,
        timeout=600,
    )

    pg_dir = HERE / "postgres"
    digest = hashlib.sha256(key.encode())
    for path in sorted(pg_dir.iterdir()):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    pg_key = digest.hexdigest()[:12]
    pg_tar = CACHE_DIR / f"postgres-{pg_key}.tar"
    pg_tag = f"{PROJECT}-postgres:{pg_key}"
    if pg_tar.exists():
        docker("load", "-i", str(pg_tar), timeout=600)
    else:
        say(f"building the PostgreSQL image (once; cached in {pg_tar})")
        docker(
            "build",
            "--network",
            "host",
            "--build-arg",
            f"BASE={base_tag}",
            "-t",
            pg_tag,
            str(pg_dir),
            timeout=900,
        )
        partial = pg_tar.with_suffix(".partial")
        docker("save", "-o", str(partial), pg_tag, timeout=600)
        partial.rename(pg_tar)
    prune_cache({base_tar, pg_tar})
    return base_tag, pg_tag


# -- the project's image ------------------------------------------------------------------------


def pip_index() -> list[str]:
    """Build args pointing pip in the build at the index pip uses here (remote indexes only)."""
    found: dict[str, str] = {}
    for key, variable in (("index-url", "PIP_INDEX_URL"), ("extra-index-url", "PIP_EXTRA_INDEX_URL")):
        value = os.environ.get(variable)
        if value is None:
            done = run(
                [sys.executable, "-m", "pip", "config", "get", f"global.{key}"],
                timeout=60,
                check=False,
                quiet=True,
            )
            value = done.stdout.strip() if done.returncode == 0 else ""
        urls = [url for url in value.split() if url.startswith(("http://", "https://"))]
        if urls:
            found[variable] = " ".join(urls)
    found.setdefault("PIP_INDEX_URL", "https://pypi.org/simple")
    args = []
    for variable, value in found.items():
        args += ["--build-arg", f"{variable}={value}"]
    return args


def build_image(docker: Docker, base_tag: str) -> str:
    image = f"{PROJECT}:latest"
    done = docker(
        "build",
        "--network",
        "host",
        "--build-arg",
        f"PYTHON_IMAGE={base_tag}",
        *pip_index(),
        "-t",
        image,
        str(ROOT),
        timeout=1200,
    )
    (ARTIFACTS / "build.log").write_text(done.stdout + done.stderr)
    size = int(docker("image", "inspect", "--format", "{{.Size}}", image).stdout)
    base = int(docker("image", "inspect", "--format", "{{.Size}}", base_tag).stdout)
    summary["image_size_mb"] = round(size / 1e6, 1)
    summary["base_size_mb"] = round(base / 1e6, 1)
    say(f"image {image}: {size / 1e6:.0f} MB (its base: {base / 1e6:.0f} MB)")
    return image


CONTENTS_CHECK = r"""
import json, os, sys
import executor
found = {"uid": os.getuid(), "gid": os.getgid(), "package": executor.__file__, "strays": []}
skip = ("/proc", "/sys", "/dev")
for top, dirs, files in os.walk("/"):
    dirs[:] = [d for d in dirs if os.path.join(top, d) not in skip]
    if "-packages" in top or top.startswith("/usr/lib/python3"):  # installed, not a source tree
        dirs[:] = []
        continue
    for name in dirs + files:
        path = os.path.join(top, name)
        if name in ("pyproject.toml", "setup.py", "setup.cfg", "alembic.ini", ".git", "executor",
                    "migrations", "dist") or path.startswith(("/src", "/tmp/dist", "/var/lib/executor/")):
            found["strays"].append(path)
print(json.dumps(found))
"""


def check_image(docker: Docker, image: str) -> None:
    config = docker.inspect(image)["Config"]
    if config["User"] != "10001:10001":
        raise CheckFailed(f"the image's user is {config['User']!r}, not 10001:10001")
    done = docker("run", "--rm", "--network", "none", "--entrypoint", "python", image, "-c", CONTENTS_CHECK)
    found = json.loads(done.stdout)
    if (found["uid"], found["gid"]) != (10001, 10001):
        raise CheckFailed(f"the container runs as {found['uid']}:{found['gid']}")
    if "-packages/executor/" not in found["package"]:
        raise CheckFailed(f"executor is imported from {found['package']}, not an installed wheel")
    # The wheel's console script and the (empty) state directory are the `executor`s allowed.
    strays = [p for p in found["strays"] if p not in ("/usr/local/bin/executor", "/var/lib/executor")]
    if strays:
        raise CheckFailed(f"the image carries a source tree or build leftovers: {strays}")
    summary["image_user"] = config["User"]


# -- one node: docker run ------------------------------------------------------------------------


def published(docker: Docker, name: str) -> str:
    mapping = docker("port", name, "8420/tcp").stdout.split()[0]  # 127.0.0.1:NNNNN
    return f"http://{mapping}"


def start_node(
    docker: Docker, image: str, name: str, token: str, network: str, volume: str
) -> tuple[str, float]:
    """Start a container; (its published URL, seconds from `docker run` to healthy)."""
    began = time.monotonic()
    docker(
        "run",
        "-d",
        "--name",
        name,
        "--network",
        network,
        "-p",
        "127.0.0.1::8420",
        "-e",
        f"EXECUTOR_API_TOKEN={token}",
        "-v",
        f"{volume}:/var/lib/executor",
        image,
    )
    url = published(docker, name)
    wait_for(f"{name}'s /healthz over the published port", lambda: answers(f"{url}/healthz"), 60)
    serving = time.monotonic() - began
    # Docker runs the first HEALTHCHECK one interval (15s) after the start.
    wait_for(f"{name} to be healthy", lambda: docker.health(name) == "healthy", 90)
    healthy = time.monotonic() - began
    say(f"   {name}: /healthz answers after {serving:.1f}s, Docker says healthy after {healthy:.1f}s")
    summary.setdefault("startup", {})[name] = {"http_s": round(serving, 1), "healthy_s": round(healthy, 1)}
    return url, healthy


def execution(url: str, token: str, execution_id: str) -> dict[str, Any]:
    status, body = http("GET", f"{url}/api/v1/executions/{execution_id}", token)
    if status != 200:
        raise CheckFailed(f"GET execution {execution_id}: {status} {body}")
    return body  # type: ignore[no-any-return]


def submit(url: str, token: str, task_type: str, inputs: dict[str, Any]) -> str:
    status, body = http("POST", f"{url}/api/v1/executions", token, {"task_type": task_type, "inputs": inputs})
    if status != 201:
        raise CheckFailed(f"submit {task_type}: {status} {body}")
    return str(body["id"])


def phase_of(record: dict[str, Any]) -> str:
    return str(record.get("phase"))


def stop_node(docker: Docker, name: str) -> float:
    began = time.monotonic()
    docker("stop", "-t", str(STOP_TIMEOUT), name, timeout=STOP_TIMEOUT + 30)
    took = time.monotonic() - began
    state = docker.inspect(name)["State"]
    docker.save_logs(name)
    if state["ExitCode"] != 0 or state.get("OOMKilled"):
        raise CheckFailed(
            f"{name} exited {state['ExitCode']} on docker stop (see {ARTIFACTS / (name + '.log')})"
        )
    if took >= SHUTDOWN_GRACE:
        raise CheckFailed(f"{name} took {took:.1f}s to stop, not within the {SHUTDOWN_GRACE:.0f}s grace")
    say(f"   {name}: docker stop -> exit 0 in {took:.1f}s")
    summary.setdefault("stop_s", {})[name] = round(took, 1)
    return took


def single_node(docker: Docker, image: str) -> None:
    network, volume, token = f"{PROJECT}-net", f"{PROJECT}-data", secrets.token_urlsafe(24)
    docker("network", "create", network)
    record_bridges(docker)
    docker("volume", "create", volume)

    first, second = f"{PROJECT}-1", f"{PROJECT}-2"
    url, _ = start_node(docker, image, first, token, network, volume)
    status, _ = http("GET", f"{url}/api/v1/executions")
    if status != 401:
        raise CheckFailed(f"the API answered {status} without the token, not 401")
    execution_id = submit(url, token, "core-sleep", {"duration": "2s"})
    wait_for(
        "the execution to reach SUCCESS",
        lambda: phase_of(execution(url, token, execution_id)) == "SUCCESS",
        60,
    )
    say(f"   execution {execution_id} reached SUCCESS over {url}")
    stop_node(docker, first)

    url, _ = start_node(docker, image, second, token, network, volume)
    again = execution(url, token, execution_id)
    if phase_of(again) != "SUCCESS":
        raise CheckFailed(f"after a restart on the same volume the execution is {phase_of(again)}")
    say(f"   {second} on the same volume still has {execution_id} ({phase_of(again)})")
    stop_node(docker, second)
    docker("rm", first, second)
    docker("volume", "rm", volume)
    docker("network", "rm", network)


# -- compose: PostgreSQL and two replicas --------------------------------------------------------


class Compose:
    def __init__(self, docker: Docker, env: dict[str, str]) -> None:
        self.docker = docker
        self.env = {**docker.env, **env, "COMPOSE_PROJECT_NAME": PROJECT}
        self.files = ["-f", str(ROOT / "config/docker-compose.yml"), "-f", str(HERE / "compose.test.yml")]

    def __call__(
        self, *args: str, timeout: float = 120, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        return run(["docker-compose", *self.files, *args], timeout=timeout, check=check, env=self.env)

    def container(self, service: str) -> str:
        ids = self("ps", "-q", service).stdout.split()
        if len(ids) != 1:
            raise CheckFailed(f"compose service {service}: containers {ids}")
        return ids[0]


def replicas(url: str, token: str) -> dict[str, dict[str, Any]]:
    status, body = http("GET", f"{url}/api/v1/replicas", token)
    if status != 200:
        raise CheckFailed(f"GET replicas: {status} {body}")
    return {item["id"]: item for item in body["items"]}


def compose_replicas(docker: Docker, image: str, postgres_tag: str) -> None:
    plugins = RUN_DIR / "plugins"
    plugins.mkdir()
    for plugin in (ROOT / "plugins").glob("*.py"):
        shutil.copy(plugin, plugins)
    shutil.copy(ROOT / "tests/replica_plugins/fence.py", plugins)  # a slow round to interrupt
    token = secrets.token_urlsafe(24)
    ports = {"EXECUTOR_1_PORT": str(free_port()), "EXECUTOR_2_PORT": str(free_port())}
    compose = Compose(
        docker,
        {
            "EXECUTOR_API_TOKEN": token,
            "EXECUTOR_IMAGE": image,
            "POSTGRES_IMAGE": postgres_tag,
            "EXECUTOR_IMAGE_TEST_PLUGINS": str(plugins),
            **ports,
        },
    )
    url1 = f"http://127.0.0.1:{ports['EXECUTOR_1_PORT']}"
    url2 = f"http://127.0.0.1:{ports['EXECUTOR_2_PORT']}"
    try:
        began = time.monotonic()
        compose("up", "-d", "--no-build", timeout=300)
        record_bridges(docker)
        one, two = compose.container("executor-1"), compose.container("executor-2")
        for name in (one, two):
            wait_for("both replicas to be healthy", lambda n=name: docker.health(n) == "healthy", 120)
        summary["compose_up_to_healthy_s"] = round(time.monotonic() - began, 1)
        migrate = docker.inspect(compose("ps", "-q", "migrate").stdout.split()[0])["State"]
        if migrate["Running"] or migrate["ExitCode"] != 0:
            raise CheckFailed(f"the migrate service did not complete: {migrate}")
        wait_for(
            "both replicas to see each other",
            lambda: (
                {"executor-1", "executor-2"} <= {i for i, r in replicas(url1, token).items() if r["live"]}
            ),
            30,
        )
        say("   postgres, migrate (exit 0) and both replicas healthy; each sees the other")

        # Both replicas work.
        ids = [submit(url2, token, "core-sleep", {"duration": "1s"}) for _ in range(4)]
        wait_for(
            "4 core-sleep executions to succeed",
            lambda: all(phase_of(execution(url1, token, i)) == "SUCCESS" for i in ids),
            60,
        )

        # Replica 1 alone takes work whose first round is slow on it, and is killed mid-round
        # (at once: the round lasts FENCE_HOLD, so it cannot have committed); then replica 2
        # comes back and must finish everything, the killed replica's leases once they lapse.
        compose("stop", "executor-2", timeout=STOP_TIMEOUT + 30)
        state = docker.inspect(two)["State"]
        if state["ExitCode"] != 0:
            raise CheckFailed(f"executor-2 exited {state['ExitCode']} on compose stop")
        fence = {"rounds": 3, "interval": "100ms", "hold": FENCE_HOLD, "hold_on": "executor-1"}
        work = [submit(url1, token, "fence", fence) for _ in range(6)]
        wait_for(
            "executor-1 to hold leases",
            lambda: replicas(url1, token).get("executor-1", {}).get("executions_leased"),
            20,
        )
        compose("kill", "-s", "SIGKILL", "executor-1", timeout=60)
        killed_at = time.monotonic()
        compose("start", "executor-2", timeout=60)
        wait_for("executor-2's /healthz", lambda: answers(f"{url2}/healthz"), 60)
        state = docker.inspect(one)["State"]
        if state["Running"] or state["ExitCode"] != 137:
            raise CheckFailed(f"executor-1 is not dead after SIGKILL: {state}")
        held = replicas(url2, token).get("executor-1", {}).get("executions_leased", 0)
        if not held:
            raise CheckFailed("executor-1 died holding no lease: the test proves nothing")
        summary["leases_held_by_the_killed_replica"] = held
        say(f"   executor-1 killed in the middle of a round, holding {held} leases; executor-2 started")
        wait_for(
            "executor-2 to finish all the work",
            lambda: all(phase_of(execution(url2, token, i)) == "SUCCESS" for i in work),
            LEASE_TTL + 60,
        )
        summary["takeover_after_kill_s"] = round(time.monotonic() - killed_at, 1)
        for execution_id in work:
            _, events = http("GET", f"{url2}/api/v1/executions/{execution_id}/events", token)
            by = {m for e in events["items"] for m in REPLICA_IN_INFO.findall(json.dumps(e.get("info")))}
            if "executor-2" not in by or "executor-1" in by:
                raise CheckFailed(f"{execution_id}'s rounds were committed by {by}, not executor-2 alone")
        say(f"   executor-2 finished all {len(work)} within {summary['takeover_after_kill_s']}s of the kill")
        still = replicas(url2, token).get("executor-1", {}).get("executions_leased", 0)
        if still:
            raise CheckFailed(f"executor-1 still holds {still} leases")
        stop_node(docker, two)
    finally:
        for service in ("postgres", "migrate", "executor-1", "executor-2"):
            for container in compose("ps", "-q", service, check=False).stdout.split():
                docker.save_logs(container)
                shutil.move(ARTIFACTS / f"{container}.log", ARTIFACTS / f"compose-{service}.log")
        compose("down", "-v", "--remove-orphans", "-t", "5", timeout=180, check=False)


# -- main ----------------------------------------------------------------------------------------


def main() -> int:
    if os.environ.get("EXECUTOR_SKIP_IMAGE_TEST"):
        print("image-test: skipped (EXECUTOR_SKIP_IMAGE_TEST is set)")
        return 0
    if os.geteuid() != 0:
        print(
            "image-test: needs root (it installs packages and runs its own dockerd and debootstrap): "
            "run `sudo make image-test`, or set EXECUTOR_SKIP_IMAGE_TEST=1",
            file=sys.stderr,
        )
        return 2
    # A CI timeout's SIGTERM unwinds like an error: containers removed, the daemon stopped.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    if ARTIFACTS.exists():
        shutil.rmtree(ARTIFACTS)
    ARTIFACTS.mkdir(parents=True)
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    failed: BaseException | None = None
    with (CACHE_DIR / "lock").open("w") as lock:
        say(f"waiting for {CACHE_DIR / 'lock'} (one image test per machine at a time)")
        wait_for("the lock", lambda: _try_lock(lock), 1800, interval=2)
        try:
            with step("packages"):
                ensure_packages()
            with private_daemon() as docker:
                with step("base images"):
                    base_tag, postgres_tag = ensure_base_images(docker)
                with step("build"):
                    image = build_image(docker, base_tag)
                with step("image contents"):
                    check_image(docker, image)
                with step("docker run"):
                    single_node(docker, image)
                with step("compose"):
                    compose_replicas(docker, image, postgres_tag)
        except Exception as err:  # reported below, after the clean-up the with-blocks did
            failed = err
    summary["total_s"] = round(time.monotonic() - _started, 1)
    summary["ok"] = failed is None
    (ARTIFACTS / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    if failed is not None:
        print(
            f"image-test: FAILED: {type(failed).__name__}: {failed}\n(logs in {ARTIFACTS})", file=sys.stderr
        )
        return 1
    say(f"passed in {summary['total_s']}s")
    return 0


def _try_lock(lock: Any) -> bool:
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


if __name__ == "__main__":
    sys.exit(main())
