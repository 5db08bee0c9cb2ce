"""The daemon's HTTP surface: health checks, Prometheus metrics, the JSON API and the dashboard.

An edge, like the CLI: it reads the store and the loaded plugins, and the loop reports to it
through `Metrics` (a `RoundObserver`). Nothing below it imports it; `executor.daemon` assembles it.
"""

from executor.http.app import HttpServer, create_app
from executor.http.metrics import Metrics

__all__ = ["HttpServer", "Metrics", "create_app"]
