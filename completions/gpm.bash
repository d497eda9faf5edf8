# bash completion for gpm. Generated from the Click app by `python tools/generate.py`; do not edit.
# Install: copy to /usr/share/bash-completion/completions/gpm (or
# ~/.local/share/bash-completion/completions/gpm).

_gpm_subcommands() {
    case "$1" in
        "") echo "archive classify config daemon doctor export install ollama-watch ps report sample serve-metrics" ;;
        "config") echo "check init show" ;;
        "install") echo "completions cron grafana-dashboard man prometheus-rules systemd" ;;
    esac
}

_gpm_options() {
    case "$1" in
        "") echo "--version --db --config -v --verbose -q --quiet -h --help" ;;
        "archive") echo "--older-than --archive-dir --dry-run --wait -h --help" ;;
        "classify") echo "-i --input --steam-path --explain -h --help" ;;
        "config") echo "-h --help" ;;
        "config check") echo "-h --help" ;;
        "config init") echo "--force --path --stdout -h --help" ;;
        "config show") echo "--json -h --help" ;;
        "daemon") echo "-i --interval --log-level --log-format -h --help" ;;
        "doctor") echo "--json --fix -h --help" ;;
        "export") echo "--table -t --since --until --format -f --output -o --archive-dir --host -h --help" ;;
        "install") echo "-h --help" ;;
        "install completions") echo "--shell --system -h --help" ;;
        "install cron") echo "-h --help" ;;
        "install grafana-dashboard") echo "-o --output -h --help" ;;
        "install man") echo "--system -h --help" ;;
        "install prometheus-rules") echo "--job -o --output -h --help" ;;
        "install systemd") echo "--user --timers --dir --write -h --help" ;;
        "ollama-watch") echo "-f --follow -i --interval --api-url --proxy --json --otlp --no-otlp --otlp-endpoint --otlp-protocol -h --help" ;;
        "ps") echo "--json --explain -h --help" ;;
        "report") echo "--week --since --until --host --gpu --format --section --weeks --archive-dir --busy-threshold -o --output --no-cache -h --help" ;;
        "sample") echo "-n --count -i --interval -f --follow --json --no-store --textfile -h --help" ;;
        "serve-metrics") echo "--listen --per-process --no-per-process --cache-secs --ollama --no-ollama --otlp --no-otlp --otlp-endpoint --otlp-protocol --export-interval --no-prometheus -h --help" ;;
    esac
}

_gpm_takes_value() {
    case "$1" in
        "") echo "--db --config" ;;
        "archive") echo "--older-than --archive-dir --wait" ;;
        "classify") echo "-i --input --steam-path" ;;
        "config init") echo "--path" ;;
        "daemon") echo "-i --interval --log-level --log-format" ;;
        "export") echo "--table -t --since --until --format -f --output -o --archive-dir --host" ;;
        "install completions") echo "--shell" ;;
        "install grafana-dashboard") echo "-o --output" ;;
        "install prometheus-rules") echo "--job -o --output" ;;
        "install systemd") echo "--dir" ;;
        "ollama-watch") echo "-i --interval --api-url --proxy --otlp-endpoint --otlp-protocol" ;;
        "ps") echo "--explain" ;;
        "report") echo "--week --since --until --host --gpu --format --section --weeks --archive-dir --busy-threshold -o --output" ;;
        "sample") echo "-n --count -i --interval --textfile" ;;
        "serve-metrics") echo "--listen --cache-secs --otlp-endpoint --otlp-protocol --export-interval" ;;
    esac
}

_gpm_values() {
    local cur=$3
    case "$1|$2" in
        "|--db") COMPREPLY=($(compgen -f -- "$cur")) ;;
        "|--config") COMPREPLY=($(compgen -f -- "$cur")) ;;
        "archive|--archive-dir") COMPREPLY=($(compgen -d -- "$cur")) ;;
        "classify|-i") COMPREPLY=($(compgen -f -- "$cur")) ;;
        "classify|--input") COMPREPLY=($(compgen -f -- "$cur")) ;;
        "classify|--steam-path") COMPREPLY=($(compgen -d -- "$cur")) ;;
        "config init|--path") COMPREPLY=($(compgen -f -- "$cur")) ;;
        "daemon|--log-level") COMPREPLY=($(compgen -W "debug info warning error" -- "$cur")) ;;
        "daemon|--log-format") COMPREPLY=($(compgen -W "text json" -- "$cur")) ;;
        "export|--format") COMPREPLY=($(compgen -W "csv parquet jsonl" -- "$cur")) ;;
        "export|-f") COMPREPLY=($(compgen -W "csv parquet jsonl" -- "$cur")) ;;
        "export|--output") COMPREPLY=($(compgen -f -- "$cur")) ;;
        "export|-o") COMPREPLY=($(compgen -f -- "$cur")) ;;
        "export|--archive-dir") COMPREPLY=($(compgen -d -- "$cur")) ;;
        "install completions|--shell") COMPREPLY=($(compgen -W "bash zsh fish" -- "$cur")) ;;
        "install grafana-dashboard|-o") COMPREPLY=($(compgen -f -- "$cur")) ;;
        "install grafana-dashboard|--output") COMPREPLY=($(compgen -f -- "$cur")) ;;
        "install prometheus-rules|-o") COMPREPLY=($(compgen -f -- "$cur")) ;;
        "install prometheus-rules|--output") COMPREPLY=($(compgen -f -- "$cur")) ;;
        "install systemd|--dir") COMPREPLY=($(compgen -d -- "$cur")) ;;
        "ollama-watch|--otlp-protocol") COMPREPLY=($(compgen -W "grpc http/protobuf" -- "$cur")) ;;
        "report|--gpu") COMPREPLY=($(compgen -W "$(_gpm_gpus)" -- "$cur")) ;;
        "report|--format") COMPREPLY=($(compgen -W "text markdown json csv html" -- "$cur")) ;;
        "report|--section") COMPREPLY=($(compgen -W "coverage gaps hosts gpus throttling days trend workload games llm models processes cost" -- "$cur")) ;;
        "report|--archive-dir") COMPREPLY=($(compgen -d -- "$cur")) ;;
        "report|-o") COMPREPLY=($(compgen -f -- "$cur")) ;;
        "report|--output") COMPREPLY=($(compgen -f -- "$cur")) ;;
        "sample|--textfile") COMPREPLY=($(compgen -f -- "$cur")) ;;
        "serve-metrics|--otlp-protocol") COMPREPLY=($(compgen -W "grpc http/protobuf" -- "$cur")) ;;
        *) COMPREPLY=() ;;
    esac
}

_gpm_gpus() { n=$(ls /proc/driver/nvidia/gpus 2>/dev/null | wc -l); if [ "$n" -gt 0 ]; then seq 0 $((n - 1)); else nvidia-smi --query-gpu=index --format=csv,noheader 2>/dev/null; fi; }

_gpm_models() { ollama list 2>/dev/null | awk 'NR > 1 {print $1}'; }

_gpm() {
    local cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD-1]}
    local path="" i w skip=0
    for ((i = 1; i < COMP_CWORD; i++)); do
        w=${COMP_WORDS[i]}
        if ((skip)); then skip=0; continue; fi
        case "$w" in
            -*=*) ;;
            -*) [[ " $(_gpm_takes_value "$path") " == *" $w "* ]] && skip=1 ;;
            *) [[ " $(_gpm_subcommands "$path") " == *" $w "* ]] && path="${path:+$path }$w" ;;
        esac
    done
    COMPREPLY=()
    if [[ " $(_gpm_takes_value "$path") " == *" $prev "* ]]; then
        _gpm_values "$path" "$prev" "$cur"
        return
    fi
    if [[ $cur == -* ]]; then
        COMPREPLY=($(compgen -W "$(_gpm_options "$path")" -- "$cur"))
        return
    fi
    local subs
    subs=$(_gpm_subcommands "$path")
    if [[ -n $subs ]]; then
        COMPREPLY=($(compgen -W "$subs" -- "$cur"))
    else
        _gpm_values "$path" "@arg" "$cur"
    fi
}

complete -o default -F _gpm gpm
