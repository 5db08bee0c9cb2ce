"""Which replica runs what: pause and resume of task types, queues and pinning (README: Pause and
resume; Queues and pinning). The store does the work (`store/pauses.py`, `store/served.py`,
`statements.served_predicate`); this package holds the CLI's commands for it."""
