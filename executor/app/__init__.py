"""The composition root: the one place where `Settings` become the running parts.

- `executor.app.parts`: what every door needs, cheaply: the store, the task types the plugin
  modules register (imported, not loaded), and the `Client` every door submits through. The CLI
  and `Client.connect` take their parts from here.
- `executor.app.process`: what only the daemon runs besides: the loaded plugins, the loop,
  metrics and the HTTP server (whose API gets its `Client` from `parts`, so it validates exactly
  as the CLI and the Python client do).

Two modules so that the command line and the Python client never import the loop or the HTTP
stack (import-linter: "the loop is not used by the client"; the CLI's start-up stays cheap).
Nothing outside this package makes a `Store` or a `Client` from settings.
"""
