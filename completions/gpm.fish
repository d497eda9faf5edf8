# fish completion for gpm. Generated from the Click app by `python tools/generate.py`; do not edit.
# Install: copy to ~/.config/fish/completions/gpm.fish (or /usr/share/fish/vendor_completions.d).

function __gpm_subcommands
    switch "$argv[1]"
        case ''
            printf '%s\n' archive classify config daemon doctor export install ollama-watch ps report sample serve-metrics
        case 'config'
            printf '%s\n' check init show
        case 'install'
            printf '%s\n' completions cron grafana-dashboard man prometheus-rules systemd
    end
end

# The subcommand path typed so far: '', 'config', 'config show'...
function __gpm_path
    set -l path
    set -l skip 0
    for t in (commandline -opc)[2..-1]
        if test $skip = 1
            set skip 0
            continue
        end
        switch $t
            case '-*=*'
            case '-*'
                contains -- $t --api-url --archive-dir --busy-threshold --cache-secs --config --count --db --dir --explain --export-interval --format --gpu --host --input --interval --job --listen --log-format --log-level --older-than --otlp-endpoint --otlp-protocol --output --path --proxy --section --shell --since --steam-path --table --textfile --until --wait --week --weeks -f -i -n -o -t; and set skip 1
            case '*'
                if contains -- $t (__gpm_subcommands "$path")
                    set path (string join ' ' -- $path $t)
                end
        end
    end
    echo "$path"
end

function __gpm_at
    set -l p (__gpm_path)
    test "$p" = "$argv[1]"
end

function __gpm_gpus
    set -l n (count /proc/driver/nvidia/gpus/*)
    if test $n -gt 0
        seq 0 (math $n - 1)
    else
        nvidia-smi --query-gpu=index --format=csv,noheader 2>/dev/null
    end
end

function __gpm_models
    ollama list 2>/dev/null | awk 'NR > 1 {print $1}'
end

complete -c gpm -f
complete -c gpm -n '__gpm_at ""' -a archive -d 'Move old rows into Parquet and shrink the database.'
complete -c gpm -n '__gpm_at ""' -a classify -d 'Classify processes described as JSON Lines (test rules).'
complete -c gpm -n '__gpm_at ""' -a config -d 'Show, check or create the configuration.'
complete -c gpm -n '__gpm_at ""' -a daemon -d 'Run sampling and every enabled job in one process.'
complete -c gpm -n '__gpm_at ""' -a doctor -d 'Check database, disk, archive, GPUs, Ollama and locks; say what to do.'
complete -c gpm -n '__gpm_at ""' -a export -d 'Export a table\'s history (SQLite + Parquet) as CSV, Parquet or JSONL.'
complete -c gpm -n '__gpm_at ""' -a install -d 'Install systemd units, completions, man pages, Prometheus rules.'
complete -c gpm -n '__gpm_at ""' -a ollama-watch -d 'Record Ollama\'s loaded models and, via a proxy, its requests.'
complete -c gpm -n '__gpm_at ""' -a ps -d 'Show the processes on each GPU with category, label and reason.'
complete -c gpm -n '__gpm_at ""' -a report -d 'Report what the GPUs did over a week or a range.'
complete -c gpm -n '__gpm_at ""' -a sample -d 'Sample every GPU and store it (cron-friendly).'
complete -c gpm -n '__gpm_at ""' -a serve-metrics -d 'Serve Prometheus /metrics (and push OTLP).'
complete -c gpm -n '__gpm_at ""' -l version -d 'Show the version and exit.'
complete -c gpm -n '__gpm_at ""' -l db -r -F -d 'SQLite database (default: $XDG_DATA_HOME/gpm/gpm.db). Env: GPM_DB.'
complete -c gpm -n '__gpm_at ""' -l config -r -F -d 'Config file (default: $XDG_CONFIG_HOME/gpm/config.toml). Env: GPM_CONFIG.'
complete -c gpm -n '__gpm_at ""' -s v -l verbose -d 'More detail on stderr (-vv for debug).'
complete -c gpm -n '__gpm_at ""' -s q -l quiet -d 'Print nothing but errors.'
complete -c gpm -n '__gpm_at ""' -s h -l help -d 'Show this message and exit.'
complete -c gpm -n '__gpm_at "archive"' -l older-than -x -d 'Move whole UTC days older than DAYS days (default: [storage] retention_days, 7).'
complete -c gpm -n '__gpm_at "archive"' -l archive-dir -r -F -d 'Parquet archive folder (default: [storage] archive_dir, else the database\'s own: docs/archive.md).'
complete -c gpm -n '__gpm_at "archive"' -l dry-run -d 'Say what would move (rows and days per table); change nothing.'
complete -c gpm -n '__gpm_at "archive"' -l wait -x -d 'Seconds to wait for another running `gpm archive` before giving up (exit 75).'
complete -c gpm -n '__gpm_at "archive"' -s h -l help -d 'Show this message and exit.'
complete -c gpm -n '__gpm_at "classify"' -s i -l input -r -F -d 'JSON Lines file to read, or - for stdin.'
complete -c gpm -n '__gpm_at "classify"' -l steam-path -r -F -d 'A Steam install or library folder to read game names from (repeatable; added to [classify] steam_paths and the usual places).'
complete -c gpm -n '__gpm_at "classify"' -l explain -d 'Also add \'rule\' (what decided) and \'signals\' (everything seen) to each object.'
complete -c gpm -n '__gpm_at "classify"' -s h -l help -d 'Show this message and exit.'
complete -c gpm -n '__gpm_at "config"' -a check -d 'Validate the configuration file and GPM_* variables; exit 0 or 2.'
complete -c gpm -n '__gpm_at "config"' -a init -d 'Write a commented example configuration (never overwrites without --force).'
complete -c gpm -n '__gpm_at "config"' -a show -d 'Print the effective configuration and where each value came from.'
complete -c gpm -n '__gpm_at "config"' -s h -l help -d 'Show this message and exit.'
complete -c gpm -n '__gpm_at "config check"' -s h -l help -d 'Show this message and exit.'
complete -c gpm -n '__gpm_at "config init"' -l force -d 'Overwrite an existing file.'
complete -c gpm -n '__gpm_at "config init"' -l path -r -F -d 'Where to write (default: --config, or $XDG_CONFIG_HOME/gpm/config.toml).'
complete -c gpm -n '__gpm_at "config init"' -l stdout -d 'Print the example instead of writing it.'
complete -c gpm -n '__gpm_at "config init"' -s h -l help -d 'Show this message and exit.'
complete -c gpm -n '__gpm_at "config show"' -l json -d 'Print JSON: {section: {key: {value, source}}}.'
complete -c gpm -n '__gpm_at "config show"' -s h -l help -d 'Show this message and exit.'
complete -c gpm -n '__gpm_at "daemon"' -s i -l interval -x -d 'Seconds between GPU samples (default: [service] poll_interval_secs).'
complete -c gpm -n '__gpm_at "daemon"' -l log-level -x -a 'debug info warning error' -d 'Least severe events logged (default: [daemon] log_level, info).'
complete -c gpm -n '__gpm_at "daemon"' -l log-format -x -a 'text json' -d 'Log lines as text or JSON objects (default: [daemon] log_format, text).'
complete -c gpm -n '__gpm_at "daemon"' -s h -l help -d 'Show this message and exit.'
complete -c gpm -n '__gpm_at "doctor"' -l json -d 'Print the findings as one JSON list of objects.'
complete -c gpm -n '__gpm_at "doctor"' -l fix -d 'Perform the safe repairs (WAL mode, free pages, temp files of a killed archive run, lock files of a deleted database), each said as it is done.'
complete -c gpm -n '__gpm_at "doctor"' -s h -l help -d 'Show this message and exit.'
complete -c gpm -n '__gpm_at "export"' -l table -s t -x -d 'gpu_metrics or another time-series table (both stores); any other table or view of the database (SQLite only), e.g. gpus.'
complete -c gpm -n '__gpm_at "export"' -l since -x -d 'Only from WHEN on: a date or datetime in local time (2026-12-01, 2026-12-01T08:00; end it in Z or +HH:MM for another zone), an ISO week (2026-W48: its Monday 00:00), a time ago (24h, 7d, 2w) or now. Default: the first row.'
complete -c gpm -n '__gpm_at "export"' -l until -x -d 'Only before WHEN (same forms as --since). Default: the last row.'
complete -c gpm -n '__gpm_at "export"' -l format -s f -x -a 'csv parquet jsonl' -d 'Output format (default: from --output\'s extension, else csv).'
complete -c gpm -n '__gpm_at "export"' -l output -s o -r -F -d 'File to write (default: stdout; parquet needs a file).'
complete -c gpm -n '__gpm_at "export"' -l archive-dir -r -F -d 'Parquet archive to read, possibly with several hosts\' archives (default: [storage] archive_dir).'
complete -c gpm -n '__gpm_at "export"' -l host -x -d 'Only these hosts (repeatable).'
complete -c gpm -n '__gpm_at "export"' -s h -l help -d 'Show this message and exit.'
complete -c gpm -n '__gpm_at "install"' -a completions -d 'Install bash, zsh and fish completions for gpm.'
complete -c gpm -n '__gpm_at "install"' -a cron -d 'Print crontab lines: sample every minute, archive daily, report weekly (also as html...'
complete -c gpm -n '__gpm_at "install"' -a grafana-dashboard -d 'Print a Grafana dashboard (JSON) over gpm\'s Prometheus metrics.'
complete -c gpm -n '__gpm_at "install"' -a man -d 'Install the man pages: gpm(1) and one page per subcommand.'
complete -c gpm -n '__gpm_at "install"' -a prometheus-rules -d 'Print Prometheus alerting rules that mean what gpm\'s [alerts] rules mean.'
complete -c gpm -n '__gpm_at "install"' -a systemd -d 'Print or write systemd units for gpm.'
complete -c gpm -n '__gpm_at "install"' -s h -l help -d 'Show this message and exit.'
complete -c gpm -n '__gpm_at "install completions"' -l shell -x -a 'bash zsh fish' -d 'Only this shell (repeatable; default: all three).'
complete -c gpm -n '__gpm_at "install completions"' -l system -d 'Install for every user under /usr/local/share (needs root).'
complete -c gpm -n '__gpm_at "install completions"' -s h -l help -d 'Show this message and exit.'
complete -c gpm -n '__gpm_at "install cron"' -s h -l help -d 'Show this message and exit.'
complete -c gpm -n '__gpm_at "install grafana-dashboard"' -s o -l output -r -F -d 'Write to FILE (whole or not at all) instead of printing.'
complete -c gpm -n '__gpm_at "install grafana-dashboard"' -s h -l help -d 'Show this message and exit.'
complete -c gpm -n '__gpm_at "install man"' -l system -d 'Install under /usr/local/share/man (needs root).'
complete -c gpm -n '__gpm_at "install man"' -s h -l help -d 'Show this message and exit.'
complete -c gpm -n '__gpm_at "install prometheus-rules"' -l job -x -d 'The scrape job gpm\'s metrics come from (job_name in prometheus.yml).'
complete -c gpm -n '__gpm_at "install prometheus-rules"' -s o -l output -r -F -d 'Write to FILE (whole or not at all) instead of printing.'
complete -c gpm -n '__gpm_at "install prometheus-rules"' -s h -l help -d 'Show this message and exit.'
complete -c gpm -n '__gpm_at "install systemd"' -l user -d 'User units (systemctl --user) instead of system units.'
complete -c gpm -n '__gpm_at "install systemd"' -l timers -d 'Also gpm-sample (every minute), gpm-archive (daily) and gpm-report (weekly; also html with [report] weekly_html) services with their timers.'
complete -c gpm -n '__gpm_at "install systemd"' -l dir -r -F -d 'Write the units into this folder instead of printing them.'
complete -c gpm -n '__gpm_at "install systemd"' -l write -d 'Write the units into the systemd folder: /etc/systemd/system, or $XDG_CONFIG_HOME/systemd/user with --user.'
complete -c gpm -n '__gpm_at "install systemd"' -s h -l help -d 'Show this message and exit.'
complete -c gpm -n '__gpm_at "ollama-watch"' -s f -l follow -d 'Keep polling every [ollama] poll_interval_secs until Ctrl-C or SIGTERM (default: poll once and exit, for cron).'
complete -c gpm -n '__gpm_at "ollama-watch"' -s i -l interval -x -d 'Seconds between polls of /api/ps (default: [ollama] poll_interval_secs, 5).'
complete -c gpm -n '__gpm_at "ollama-watch"' -l api-url -x -d 'The Ollama server to watch and proxy to (default: [ollama] api_url, http://127.0.0.1:11434).'
complete -c gpm -n '__gpm_at "ollama-watch"' -l proxy -x -d 'Also serve the recording proxy on HOST:PORT (default: [ollama] proxy_listen, 127.0.0.1:11435) until Ctrl-C or SIGTERM; point OLLAMA_HOST at it.'
complete -c gpm -n '__gpm_at "ollama-watch"' -l json -d 'Print JSON Lines: each finished proxied request (the llm_requests columns); without --proxy, each loaded model per poll (the llm_sessions columns).'
complete -c gpm -n '__gpm_at "ollama-watch"' -l otlp -l no-otlp -d 'With --proxy, export one OpenTelemetry span per recorded request over OTLP; default: [telemetry] enable_opentelemetry.'
complete -c gpm -n '__gpm_at "ollama-watch"' -l otlp-endpoint -x -d 'OTLP receiver (default: [telemetry] otlp_endpoint, http://localhost:4317).'
complete -c gpm -n '__gpm_at "ollama-watch"' -l otlp-protocol -x -a 'grpc http/protobuf' -d 'OTLP transport (default: [telemetry] otlp_protocol, grpc).'
complete -c gpm -n '__gpm_at "ollama-watch"' -s h -l help -d 'Show this message and exit.'
complete -c gpm -n '__gpm_at "ps"' -l json -d 'Print JSON Lines: one object per process per GPU (command line redacted).'
complete -c gpm -n '__gpm_at "ps"' -l explain -x -d 'Print every signal seen for PID and which rule decided its category.'
complete -c gpm -n '__gpm_at "ps"' -s h -l help -d 'Show this message and exit.'
complete -c gpm -n '__gpm_at "report"' -l week -x -d 'One ISO week, Monday to Monday in local time: 2026-W47; last (the last finished week, what a weekly timer reports) or this (this week up to now).'
complete -c gpm -n '__gpm_at "report"' -l since -x -d 'Only from WHEN on: a date or datetime in local time (2026-12-01, 2026-12-01T08:00; end it in Z or +HH:MM for another zone), an ISO week (2026-W48: its Monday 00:00), a time ago (24h, 7d, 2w) or now. Default: 7 days before --until.'
complete -c gpm -n '__gpm_at "report"' -l until -x -d 'Only before WHEN (same forms as --since). Default: now.'
complete -c gpm -n '__gpm_at "report"' -l host -x -d 'Only this host (repeatable). Default: every host in the database and archive.'
complete -c gpm -n '__gpm_at "report"' -l gpu -x -a '(__gpm_gpus)' -d 'Only this GPU, by index or UUID prefix (repeatable).'
complete -c gpm -n '__gpm_at "report"' -l format -x -a 'text markdown json csv html' -d 'text: tables in human units for a terminal; markdown; json: every figure in machine units (seconds, bytes, joules) with stable keys; csv: one section (--section); html: one self-contained page of charts and their numbers, no script, nothing fetched (-o week.html).'
complete -c gpm -n '__gpm_at "report"' -l section -x -a 'coverage gaps hosts gpus throttling days trend workload games llm models processes cost' -d 'Only these sections (repeatable): coverage, gaps, hosts, gpus, throttling, days, trend, workload, games, llm, models, processes, cost; csv prints exactly one (default: gpus).'
complete -c gpm -n '__gpm_at "report"' -l weeks -x -d 'A trend table of the last N finished ISO weeks, from stored weekly summaries (weeks not summarised yet are computed once and stored).'
complete -c gpm -n '__gpm_at "report"' -l archive-dir -r -F -d 'Parquet archive to read besides the database; may hold several hosts\' archives (default: [storage] archive_dir).'
complete -c gpm -n '__gpm_at "report"' -l busy-threshold -x -d 'A GPU is busy above this utilization (default: [report] busy_threshold_percent).'
complete -c gpm -n '__gpm_at "report"' -s o -l output -r -F -d 'Write to this file atomically (temp file, then rename) instead of stdout; two such runs never overlap (the second exits 75). {week} in the path becomes the reported ISO week: -o reports/report-{week}.txt --week last.'
complete -c gpm -n '__gpm_at "report"' -l no-cache -d 'Read every raw sample instead of the stored rollup (one row per GPU and minute).'
complete -c gpm -n '__gpm_at "report"' -s h -l help -d 'Show this message and exit.'
complete -c gpm -n '__gpm_at "sample"' -s n -l count -x -d 'Take COUNT samples (default 1), -i seconds apart.'
complete -c gpm -n '__gpm_at "sample"' -s i -l interval -x -d 'Seconds between samples, with -n or --follow (default: [service] poll_interval_secs).'
complete -c gpm -n '__gpm_at "sample"' -s f -l follow -d 'Keep sampling until Ctrl-C or SIGTERM (not with -n).'
complete -c gpm -n '__gpm_at "sample"' -l json -d 'Print JSON Lines: one object per GPU per sample.'
complete -c gpm -n '__gpm_at "sample"' -l no-store -d 'Sample without writing to the database.'
complete -c gpm -n '__gpm_at "sample"' -l textfile -r -F -d 'Also write the Prometheus exposition to PATH after each sample, atomically (for node_exporter\'s textfile collector; name it *.prom).'
complete -c gpm -n '__gpm_at "sample"' -s h -l help -d 'Show this message and exit.'
complete -c gpm -n '__gpm_at "serve-metrics"' -l listen -x -d 'HOST:PORT to serve /metrics on (default: [telemetry] metrics_listen, 127.0.0.1:10435). Use 0.0.0.0:PORT to accept scrapes from other machines.'
complete -c gpm -n '__gpm_at "serve-metrics"' -l per-process -l no-per-process -d 'Also export one series per GPU process (pid, name, category labels); default: [telemetry] per_process (off).'
complete -c gpm -n '__gpm_at "serve-metrics"' -l cache-secs -x -d 'Reuse a GPU sample younger than this for further scrapes (default: [telemetry] scrape_cache_secs, 1).'
complete -c gpm -n '__gpm_at "serve-metrics"' -l ollama -l no-ollama -d 'Export the models Ollama has loaded (GET /api/ps at [ollama] api_url); default: [ollama] enabled.'
complete -c gpm -n '__gpm_at "serve-metrics"' -l otlp -l no-otlp -d 'Also push metrics over OTLP every export interval; default: [telemetry] enable_opentelemetry.'
complete -c gpm -n '__gpm_at "serve-metrics"' -l otlp-endpoint -x -d 'OTLP receiver (default: [telemetry] otlp_endpoint, http://localhost:4317).'
complete -c gpm -n '__gpm_at "serve-metrics"' -l otlp-protocol -x -a 'grpc http/protobuf' -d 'OTLP transport (default: [telemetry] otlp_protocol, grpc).'
complete -c gpm -n '__gpm_at "serve-metrics"' -l export-interval -x -d 'Seconds between OTLP exports (default: [telemetry] export_interval_secs, 10).'
complete -c gpm -n '__gpm_at "serve-metrics"' -l no-prometheus -d 'Do not serve /metrics; only push OTLP (needs --otlp).'
complete -c gpm -n '__gpm_at "serve-metrics"' -s h -l help -d 'Show this message and exit.'
