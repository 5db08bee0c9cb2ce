"""`python -m executor.http.probe [PATH]`: exit 0 when the daemon on this host answers 200.

For Docker's HEALTHCHECK and systemd's ExecStartPost-style checks: the slim image has no curl.
It reads EXECUTOR_HTTP_ADDR like the daemon does; an address bound to every interface is
probed on loopback. PATH defaults to /healthz; the body is printed either way (Docker keeps it
in `docker inspect`).
"""

from __future__ import annotations

import sys
import urllib.error
import urllib.request

from executor.settings import SettingsError, load_settings, parse_http_addr

_ANY = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}


def main(argv: list[str]) -> int:
    path = argv[0] if argv else "/healthz"
    try:
        settings = load_settings()
    except SettingsError as err:
        print(f"probe: {err}", file=sys.stderr)
        return 2
    if not settings.http_addr:
        print("probe: EXECUTOR_HTTP_ADDR is empty: the daemon serves no HTTP", file=sys.stderr)
        return 2
    host, port = parse_http_addr(settings.http_addr)
    host = _ANY.get(host, host)
    url = f"http://{f'[{host}]' if ':' in host else host}:{port}{path}"
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            print(response.read().decode(errors="replace"))
            return 0
    except urllib.error.HTTPError as err:
        print(f"probe: {url}: HTTP {err.code}: {err.read().decode(errors='replace')}", file=sys.stderr)
    except (urllib.error.URLError, OSError) as err:
        print(f"probe: {url}: {err}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
