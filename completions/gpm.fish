# fish completion for gpm. Generated from the Click app by `python -m gpm.devtools.generate`; do not edit.
# Install: copy to ~/.config/fish/completions/gpm.fish (or /usr/share/fish/vendor_completions.d).

function __gpm_subcommands
    switch "$argv[1]"
        case ''
            printf '%s\n' config daemon install sample
        case 'config'
            printf '%s\n' check init show
        case 'install'
            printf '%s\n' cron systemd
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
                contains -- $t --config --count --db --dir --interval --log-format --log-level --path -i -n; and set skip 1
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
complete -c gpm -n '__gpm_at ""' -a config -d 'Show, check or create the configuration.'
complete -c gpm -n '__gpm_at ""' -a daemon -d 'Run sampling and every enabled job in one process.'
complete -c gpm -n '__gpm_at ""' -a install -d 'Print or install systemd units or crontab lines.'
complete -c gpm -n '__gpm_at ""' -a sample -d 'Sample every GPU and store it (cron-friendly).'
complete -c gpm -n '__gpm_at ""' -l version -d 'Show the version and exit.'
complete -c gpm -n '__gpm_at ""' -l db -r -F -d 'SQLite database (default: $XDG_DATA_HOME/gpm/gpm.db). Env: GPM_DB.'
complete -c gpm -n '__gpm_at ""' -l config -r -F -d 'Config file (default: $XDG_CONFIG_HOME/gpm/config.toml). Env: GPM_CONFIG.'
complete -c gpm -n '__gpm_at ""' -s v -l verbose -d 'More detail on stderr (-vv for debug).'
complete -c gpm -n '__gpm_at ""' -s q -l quiet -d 'Print nothing but errors.'
complete -c gpm -n '__gpm_at ""' -l help -d 'Show this message and exit.'
complete -c gpm -n '__gpm_at "config"' -a check -d 'Validate the configuration file and GPM_* variables; exit 0 or 2.'
complete -c gpm -n '__gpm_at "config"' -a init -d 'Write a commented example configuration (never overwrites without --force).'
complete -c gpm -n '__gpm_at "config"' -a show -d 'Print the effective configuration and where each value came from.'
complete -c gpm -n '__gpm_at "config"' -l help -d 'Show this message and exit.'
complete -c gpm -n '__gpm_at "config check"' -l help -d 'Show this message and exit.'
complete -c gpm -n '__gpm_at "config init"' -l force -d 'Overwrite an existing file.'
complete -c gpm -n '__gpm_at "config init"' -l path -r -F -d 'Where to write (default: --config, or $XDG_CONFIG_HOME/gpm/config.toml).'
complete -c gpm -n '__gpm_at "config init"' -l stdout -d 'Print the example instead of writing it.'
complete -c gpm -n '__gpm_at "config init"' -l help -d 'Show this message and exit.'
complete -c gpm -n '__gpm_at "config show"' -l json -d 'Print JSON: {section: {key: {value, source}}}.'
complete -c gpm -n '__gpm_at "config show"' -l help -d 'Show this message and exit.'
complete -c gpm -n '__gpm_at "daemon"' -s i -l interval -x -d 'Seconds between GPU samples (default: [service] poll_interval_secs).'
complete -c gpm -n '__gpm_at "daemon"' -l log-level -x -a 'debug info warning error' -d 'Least severe events logged (default: [daemon] log_level, info).'
complete -c gpm -n '__gpm_at "daemon"' -l log-format -x -a 'text json' -d 'Log lines as text or JSON objects (default: [daemon] log_format, text).'
complete -c gpm -n '__gpm_at "daemon"' -l help -d 'Show this message and exit.'
complete -c gpm -n '__gpm_at "install"' -a cron -d 'Print crontab lines: sample every minute, archive daily, report weekly.'
complete -c gpm -n '__gpm_at "install"' -a systemd -d 'Print or write systemd units for gpm.'
complete -c gpm -n '__gpm_at "install"' -l help -d 'Show this message and exit.'
complete -c gpm -n '__gpm_at "install cron"' -l help -d 'Show this message and exit.'
complete -c gpm -n '__gpm_at "install systemd"' -l user -d 'User units (systemctl --user) instead of system units.'
complete -c gpm -n '__gpm_at "install systemd"' -l timers -d 'Also gpm-sample (every minute), gpm-archive (daily) and gpm-report (weekly) services with their timers.'
complete -c gpm -n '__gpm_at "install systemd"' -l dir -r -F -d 'Write the units into this folder instead of printing them.'
complete -c gpm -n '__gpm_at "install systemd"' -l write -d 'Write the units into the systemd folder: /etc/systemd/system, or $XDG_CONFIG_HOME/systemd/user with --user.'
complete -c gpm -n '__gpm_at "install systemd"' -l help -d 'Show this message and exit.'
complete -c gpm -n '__gpm_at "sample"' -s n -l count -x -d 'Number of samples to take.'
complete -c gpm -n '__gpm_at "sample"' -s i -l interval -x -d 'Seconds between samples (default: [service] poll_interval_secs).'
complete -c gpm -n '__gpm_at "sample"' -s f -l follow -d 'Keep sampling until Ctrl-C or SIGTERM.'
complete -c gpm -n '__gpm_at "sample"' -l json -d 'Print JSON Lines: one object per GPU per sample.'
complete -c gpm -n '__gpm_at "sample"' -l no-store -d 'Sample without writing to the database.'
complete -c gpm -n '__gpm_at "sample"' -l help -d 'Show this message and exit.'
