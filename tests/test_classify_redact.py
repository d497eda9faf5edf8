"""Secrets in realistic command lines are masked; ordinary options are left alone."""

from __future__ import annotations

import pytest

from gpm.classify.redact import redact_cmdline

CASES = [
    ("vllm_api_key_space", ["vllm", "serve", "meta-llama/Llama-3.1-8B", "--api-key", "sk-local-0123456789abcdef"],
     ["vllm", "serve", "meta-llama/Llama-3.1-8B", "--api-key", "***"]),
    ("llama_server_api_key_equals", ["llama-server", "-m", "m.gguf", "--api-key=hunter2hunter2", "--n-predict", "128"],
     ["llama-server", "-m", "m.gguf", "--api-key=***", "--n-predict", "128"]),
    ("huggingface_cli_token", ["huggingface-cli", "login", "--token", "hf_AbCdEfGhIjKlMnOpQrStUvWxYz012345"],
     ["huggingface-cli", "login", "--token", "***"]),
    ("env_prefix_tokens", ["env", "HF_TOKEN=hf_AbCdEfGhIjKlMnOpQrStUvWxYz012345", "OPENAI_API_KEY=sk-proj-abcdefghijklmnopqrstu",
                           "python", "train.py"],
     ["env", "HF_TOKEN=***", "OPENAI_API_KEY=***", "python", "train.py"]),
    ("postgres_url_password", ["python", "etl.py", "--db", "postgresql://etl:S3cr3t!@db.internal:5432/metrics"],
     ["python", "etl.py", "--db", "postgresql://etl:***@db.internal:5432/metrics"]),
    ("wandb_key_and_password_pair", ["python", "train.py", "wandb_api_key=0123456789abcdef0123", "password=letmein"],
     ["python", "train.py", "wandb_api_key=***", "password=***"]),
    ("curl_bearer_in_shell", ["bash", "-c", "curl -H 'Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.abc' http://h/v1"],
     ["bash", "-c", "curl -H 'Authorization: Bearer ***' http://h/v1"]),
    ("curl_user_password", ["curl", "-u", "admin:pa55word", "https://registry.local"],
     ["curl", "-u", "admin:***", "https://registry.local"]),
    ("query_string_token", ["ffmpeg", "-i", "https://cam.local/stream?user=x&token=abc123&fps=30", "out.mp4"],
     ["ffmpeg", "-i", "https://cam.local/stream?user=x&token=***&fps=30", "out.mp4"]),
    ("json_argument", ["python", "serve.py", '{"model": "x", "api_key": "abc123"}'],
     ["python", "serve.py", '{"model": "x", "api_key": "***"}']),
    ("bare_github_token", ["git", "clone", "https://github.com/x/y", "ghp_0123456789abcdefghijABCDEFGHIJ"],
     ["git", "clone", "https://github.com/x/y", "***"]),
    ("miner_pool_password", ["./t-rex", "-o", "stratum+tcp://wallet.rig:x9secret@pool:3333", "--pass", "x9secret"],
     ["./t-rex", "-o", "stratum+tcp://wallet.rig:***@pool:3333", "--pass", "***"]),
]

UNTOUCHED = [
    ["python", "generate.py", "--max-tokens", "512", "--max_new_tokens=256", "--tokenizer", "gpt2"],
    ["llama-server", "-m", "/models/x.gguf", "--host", "127.0.0.1:8080", "--author", "me"],
    ["ollama", "runner", "--model", "/blobs/sha256-" + "a" * 64, "--port", "39185"],
    ["torchrun", "--master-port=29500", "train.py", "--keyframes", "10"],
]


@pytest.mark.parametrize("case,given,want", CASES, ids=[c[0] for c in CASES])
def test_secrets_are_masked(case, given, want):
    assert redact_cmdline(given) == want


@pytest.mark.parametrize("cmdline", UNTOUCHED)
def test_ordinary_options_stay(cmdline):
    assert redact_cmdline(cmdline) == cmdline


def test_idempotent():
    for _, given, want in CASES:
        assert redact_cmdline(want) == want
