"""Example command lines for the man pages' EXAMPLES sections, by subcommand.

Kept here rather than scraped from the README so that the installed
``gpm install man`` renders the same pages as the repository's ``man/``
and the README can stay short. Each entry: (command line, what it does).
"""

from __future__ import annotations

EXAMPLES: dict[str, list[tuple[str, str]]] = {
    'archive': [
        ('gpm archive', 'move whole UTC days older than [storage] retention_days (7)'),
        ('gpm archive --older-than 30', 'keep 30 days in SQLite instead'),
        ('gpm archive --dry-run', 'rows and days per table that would move; changes nothing'),
    ],
    'classify': [
        ('gpm classify --input procs.jsonl --explain', 'the same rules on described processes'),
    ],
    'daemon': [
        ('gpm daemon', 'sample every [service] poll_interval_secs, run enabled jobs'),
        ('gpm daemon --interval 1 --log-level debug', 'one sample a second, every event logged'),
        ('gpm daemon --log-format json', 'one JSON object per log line'),
    ],
    'export': [
        ('gpm export -t gpu_metrics --since 7d > last-week.csv', ''),
        ('gpm export -t gpu_metrics --since 2025-01-01 --until 2025-02-01 -o january.parquet',
         ''),
        ('gpm export -t gpu_metrics --archive-dir /mnt/fleet-archive --host gpu-07 -f jsonl',
         ''),
    ],
    'install': [
        ('gpm install systemd', 'print gpm.service (each unit under a "# NAME" line)'),
        ('gpm install systemd --user --timers --write', 'install user units and timers'),
        ('gpm install systemd --timers --dir ./units', 'write them into a folder'),
        ('gpm install cron', 'print the equivalent crontab lines'),
        ('gpm install systemd --user --write && systemctl --user daemon-reload && systemctl --user enable --now gpm',
         ''),
    ],
    'ollama-watch': [
        ('gpm ollama-watch', 'one poll of /api/version + /api/ps, stored; silent (cron)'),
        ('gpm ollama-watch --follow',
         'poll every [ollama] poll_interval_secs (5) until Ctrl-C / SIGTERM'),
        ('gpm ollama-watch --json', 'each loaded model as a JSON line (llm_sessions columns)'),
        ('gpm ollama-watch --proxy',
         '+ recording proxy on [ollama] proxy_listen (127.0.0.1:11435)'),
        ('gpm ollama-watch --proxy 0.0.0.0:11435 --json', 'one JSON line per finished request'),
        ('gpm ollama-watch --proxy --otlp', '127.0.0.1:11435 -> Ollama at 127.0.0.1:11434'),
        ('gpm ollama-watch --proxy --otlp --otlp-endpoint http://collector:4318 --otlp-protocol http/protobuf',
         ''),
    ],
    'ps': [
        ('gpm ps', 'GPU, PID, user, name, category, label, GPU memory, reason'),
        ('gpm ps --json', 'JSON Lines, one object per process per GPU (command line redacted)'),
        ('gpm ps --explain 41873', 'every signal seen for that pid, and which rule decided'),
    ],
    'report': [
        ('gpm report', 'the last 7 days up to now, on the terminal'),
        ('gpm report --week 2026-W47',
         'one ISO week (Monday 00:00 to Monday 00:00, local time)'),
        ('gpm report --since 2026-11-01 --until 2026-11-15T12:00',
         'dates, datetimes (local unless Z/offset)'),
        ('gpm report --since 24h --gpu 0', 'relative times; one GPU by index or UUID prefix'),
        ('gpm report --format json', 'every figure in machine units (seconds, bytes, joules)'),
        ('gpm report --format csv --section gpus', 'one section as CSV'),
        ('gpm report --format markdown -o ~/reports/last-week.md',
         'atomic write, for cron and timers'),
        ('gpm report --weeks 12', 'trend of the last 12 finished ISO weeks'),
        ('gpm report --archive-dir /srv/gpm-archives',
         "several hosts' archives: per-host table + fleet totals"),
    ],
    'sample': [
        ('gpm sample', 'one sample of every GPU, stored; silent unless on a terminal'),
        ('gpm sample --json', 'JSON Lines: one object per GPU per sample'),
        ('gpm sample -n 10 -i 1', 'ten samples, one second apart (drift-free schedule)'),
        ('gpm sample --follow -i 2', 'every two seconds until Ctrl-C'),
        ('gpm sample --follow', 'until Ctrl-C / SIGTERM (stops after the current write)'),
        ('gpm sample --no-store', 'read without writing'),
        ('gpm sample --textfile /var/lib/node_exporter/textfile/gpm.prom',
         "cron + node_exporter's textfile collector"),
    ],
    'serve-metrics': [
        ('gpm serve-metrics', 'http://127.0.0.1:10435/metrics until Ctrl-C / SIGTERM'),
        ('gpm serve-metrics --listen 0.0.0.0:10435',
         'let other machines scrape (only when asked)'),
        ('gpm serve-metrics --per-process',
         'add one series per GPU process (pid, name, category)'),
        ('gpm serve-metrics --otlp', 'also push OTLP/gRPC to http://localhost:4317 every 10 s'),
        ('gpm serve-metrics --otlp --no-prometheus --otlp-endpoint http://collector:4318 --otlp-protocol http/protobuf',
         ''),
    ],
}
