"""Telemetry: Prometheus exposition, OTLP push and proxy traces.

Layering, so that the daemon and the standalone command share everything:

- ``state.MetricsState`` holds the latest GPU samples, collector health and
  the LLM statistics; it is fed by the daemon, or refreshed at scrape time
  by ``state.ScrapeRefresher`` when ``gpm serve-metrics`` runs alone.
- ``prometheus`` turns a snapshot of that state into metric families (a
  custom collector, built afresh at each scrape); ``server`` serves them.
- ``otlp`` pushes the same state with OpenTelemetry names; ``tracing`` makes
  one span per proxied LLM request.
- ``llm`` aggregates proxied requests into counters and histograms.
- ``alerts_feed`` reads gpm's firing alerts from the database at scrape time.
- ``prometheus_rules`` and ``grafana`` write the alerting rules and the
  dashboard of ``gpm install prometheus-rules|grafana-dashboard``.

Only ``prometheus``, ``server``, ``otlp`` and ``tracing`` import the heavy
client libraries, and only when they are imported themselves.
"""
