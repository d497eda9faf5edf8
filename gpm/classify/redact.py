"""Remove secrets from command lines before they are stored or printed.

Command lines carry API keys (``--api-key sk-...``), tokens (``HF_TOKEN=...``),
passwords (``--password``, ``postgres://user:pass@host``) and bearer headers.
The value is replaced by ``***``; the option name stays, so a reader still
sees that a key was given. Two passes:

- argument-wise: ``--token VALUE`` (the value is the next argument) and
  ``--token=VALUE``, for option names that say secret;
- text-wise inside every argument (they can be whole shell commands):
  ``key=value`` / ``key: value`` pairs with a secret key, ``user:pass@`` in
  URLs, ``Bearer``/``Basic`` credentials, and well-known token shapes
  (``sk-...``, ``hf_...``, ``ghp_...``, ``AKIA...``) wherever they appear.

Plural counters such as ``--max-tokens`` or ``max_new_tokens`` are not secrets.
"""

from __future__ import annotations

import re

from gpm.classify import LazyPattern

MASK = "***"

# Names whose value is a secret: matched against an option or variable name
# with dashes turned into underscores. Anchored at a word end so that
# "tokens", "tokenizer" and "author" do not match.
_SECRET_NAME = LazyPattern(
    r"(?:^|_)(?:token|access_token|auth_token|refresh_token|api_?key|apikey|access_key|secret_key|"
    r"private_key|session_key|license_key|secret|client_secret|password|passwd|passphrase|pwd|pass|"
    r"auth|authorization|credentials?|cookie|key)$",
    re.IGNORECASE,
    needles=("token", "key", "secret", "pass", "pwd", "auth", "credential", "cookie"),
)
# name=value anywhere; name: value only with a space after the colon (headers,
# YAML) or as JSON ("name": "value"), so "https://" and "host:port" are not pairs.
_NAMED_VALUE = LazyPattern(
    r"""(?P<name>[A-Za-z_][A-Za-z0-9_.-]*)(?P<sep>\s*=\s*|:\s+|"\s*:\s*")(?P<quote>["']?)"""
    r"""(?P<value>[^\s"'&?,;}]+)""",
    needles=("=", ":"),
)
_SCHEMES = ("bearer", "basic", "token")
_URL_CREDENTIALS = LazyPattern(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<user>[^/\s:@]*):(?P<pw>[^/\s@]+)@",
                               needles=("://",))
_AUTH_SCHEME = LazyPattern(r"\b(?P<scheme>Bearer|Basic|Token)(?P<sp>\s+)(?P<cred>[A-Za-z0-9._~+/=-]{8,})",
                           re.IGNORECASE, needles=("bearer", "basic", "token"))
_TOKEN_SHAPES = LazyPattern(
    r"\b(?:sk-(?:proj-|ant-)?[A-Za-z0-9_-]{16,}|hf_[A-Za-z0-9]{20,}|gh[pousr]_[A-Za-z0-9]{20,}|"
    r"github_pat_[A-Za-z0-9_]{20,}|glpat-[A-Za-z0-9_-]{16,}|xox[abprs]-[A-Za-z0-9-]{10,}|"
    r"AKIA[0-9A-Z]{16}|AIza[0-9A-Za-z_-]{30,}|eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]+)",
    needles=("sk-", "hf_", "gh", "glpat-", "xox", "AKIA", "AIza", "eyJ"),
)


def is_secret_name(name: str) -> bool:
    return bool(_SECRET_NAME.search(name.lstrip("-").replace("-", "_").replace(".", "_")))


def _redact_named(text: str) -> str:
    out = []
    pos = 0
    while True:
        m = _NAMED_VALUE.search(text, pos)
        if m is None:
            break
        value = m.group("value")
        if is_secret_name(m.group("name")) and value != MASK and value.lower() not in _SCHEMES:
            out.append(text[pos:m.start("value")] + MASK)
            pos = m.end("value")
        else:
            # Not a secret: look again inside its value ("url=http://h/?token=x").
            out.append(text[pos:m.start("value")])
            pos = m.start("value")
    out.append(text[pos:])
    return "".join(out)


def redact_text(text: str) -> str:
    """Mask secrets inside one string (an argument, or a whole shell command)."""
    text = _URL_CREDENTIALS.sub(lambda m: f"{m.group('scheme')}{m.group('user')}:{MASK}@", text)
    text = _AUTH_SCHEME.sub(lambda m: f"{m.group('scheme')}{m.group('sp')}{MASK}", text)
    text = _redact_named(text)
    return _TOKEN_SHAPES.sub(MASK, text)


def redact_cmdline(cmdline: list[str]) -> list[str]:
    """A copy of ``cmdline`` with secret values replaced by ``***``."""
    out: list[str] = []
    pending = None  # "value": mask the next argument; "userpass": mask after its ':'
    for arg in cmdline:
        if pending == "value" and not arg.startswith("--"):
            out.append(MASK)
            pending = None
            continue
        if pending == "userpass":
            pending = None
            user, sep, password = arg.partition(":")
            if sep and password:
                out.append(f"{user}:{MASK}")
                continue
        pending = None
        if arg.startswith("-") and "=" not in arg and len(arg) > 2 and is_secret_name(arg):
            pending = "value"  # --token VALUE
        elif arg in ("-u", "--user"):
            pending = "userpass"  # curl -u user:password
        out.append(redact_text(arg))
    return out
