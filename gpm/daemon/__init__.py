"""``gpm daemon``: one long-lived process that schedules gpm's jobs.

- ``scheduler``: a thread and a drift-free schedule per job, back-off on failure.
- ``jobs``: the job registry (``JOB_KINDS``) and the adapters over the library
  functions the one-shot subcommands call; the two larger ones in
  ``sampling_job`` and ``archive_job``; ``job_context``: what every job is built with.
- ``core``: start, SIGHUP reload, SIGTERM stop, systemd readiness and watchdog.
- ``notify``, ``logs``: sd_notify without libsystemd; journald-friendly lines.
"""
