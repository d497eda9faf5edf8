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
from dataclasses import dataclass

MASK = "***"

# Names whose value is a secret: matched against an option or variable name
# with dashes turned into underscores. Anchored at a word end so that
# "tokens", "tokenizer" and "author" do not match.
_SECRET_NAME = re.compile(
    r"(?:^|_)(?:token|access_token|auth_token|refresh_token|api_?key|apikey|access_key|secret_key|"
    r"private_key|session_key|license_key|secret|client_secret|password|passwd|passphrase|pwd|pass|"
    r"auth|authorization|credentials?|cookie|key)$",
    re.IGNORECASE,
)
# name=value anywhere (a JVM property's -D is not part of its name: -Dpassword=);
# name: value only with a space after the colon (headers,
# YAML) or as JSON ("name": "value"), so "https://" and "host:port" are not pairs.
# A name starts only where a name can start (the look-behind), and names are
# found left to right, never rescanned: a run of letters, or of "a=a=a=", was
# scanned again from every position before, quadratic time that let any local
# user stall gpm sample for minutes with one long argument (#12).
_NAME_SEP = re.compile(
    r"""(?<![A-Za-z0-9_.])(?<![A-Za-z0-9_.]-)(?:-D)?(?P<name>[A-Za-z_][A-Za-z0-9_.-]*)(?P<sep>\s*=\s*|:\s+|"\s*:\s*")""")
_VALUE = re.compile(r"""(?P<quote>["']?)(?P<value>[^\s"'&?,;}]+)""")
_SCHEMES = ("bearer", "basic", "token")
_URL_CREDENTIALS = re.compile(r"(?<![A-Za-z0-9+.-])(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<user>[^/\s:@]*):(?P<pw>[^/\s@]+)@")
_AUTH_SCHEME = re.compile(r"\b(?P<scheme>Bearer|Basic|Token)(?P<sp>\s+)(?P<cred>[A-Za-z0-9._~+/=-]{8,})",
                           re.IGNORECASE)
_TOKEN_SHAPES = re.compile(
    r"\b(?:sk-(?:proj-|ant-)?[A-Za-z0-9_-]{16,}|hf_[A-Za-z0-9]{20,}|gh[pousr]_[A-Za-z0-9]{20,}|"
    r"github_pat_[A-Za-z0-9_]{20,}|glpat-[A-Za-z0-9_-]{16,}|xox[abprs]-[A-Za-z0-9-]{10,}|"
    r"AKIA[0-9A-Z]{16}|AIza[0-9A-Za-z_-]{30,}|eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]+)",
)


def is_secret_name(name: str) -> bool:
    return bool(_SECRET_NAME.search(name.lstrip("-").replace("-", "_").replace(".", "_")))


def _redact_named(text: str) -> str:
    """Mask the value of every ``name=value`` pair whose name says secret; a pair that
    is not a secret is looked into, since its value may hold one (``url=http://h/?token=x``)."""
    out = []
    pos = 0
    for m in _NAME_SEP.finditer(text):
        if m.start() < pos or not is_secret_name(m.group("name")):
            continue
        v = _VALUE.match(text, m.end())
        if v is None or v.group("value") == MASK or v.group("value").lower() in _SCHEMES:
            continue
        out.append(text[pos:v.start("value")] + MASK)
        pos = v.end("value")
    out.append(text[pos:])
    return "".join(out)


def redact_text(text: str) -> str:
    """Mask secrets inside one string (an argument, or a whole shell command)."""
    text = _URL_CREDENTIALS.sub(lambda m: f"{m.group('scheme')}{m.group('user')}:{MASK}@", text)
    text = _AUTH_SCHEME.sub(lambda m: f"{m.group('scheme')}{m.group('sp')}{MASK}", text)
    text = _redact_named(text)
    return _TOKEN_SHAPES.sub(MASK, text)


# Programs whose short option takes a password, attached (``mysql -pSECRET``)
# or as the next argument (``sshpass -p SECRET``). A short ``-p`` means a port
# or a path elsewhere, so it is masked only after one of these names.
PASSWORD_SHORT_OPTIONS = {
    **dict.fromkeys(("mysql", "mysqldump", "mysqladmin", "mysqlimport", "mysqlshow", "mysqlcheck",
                     "mysqlpump", "mysqlsh", "mariadb", "mariadb-dump", "mariadb-admin", "mongo", "mongosh",
                     "mongodump", "mongorestore", "mongoexport", "mongoimport", "sshpass", "rabbitmqadmin",
                     "7z", "7za", "unrar"), "-p"),
    **dict.fromkeys(("redis-cli", "keydb-cli", "valkey-cli"), "-a"),
    **dict.fromkeys(("ldapsearch", "ldapadd", "ldapmodify", "ldapdelete", "ldappasswd", "ldapwhoami"), "-w"),
    **dict.fromkeys(("sqlcmd", "bcp", "zip", "unzip"), "-P"),
}
# A word of a command held in one string: quoted parts stay whole.
_WORD = re.compile(r"""(?:'[^']*'|"[^"]*"|[^\s'"])+""")


@dataclass
class _Words:
    """The argument-wise pass, one word at a time, over a whole command line.

    A word is an argument, or a word of an argument holding a whole command
    (``sh -c "..."``, or a title set with setproctitle: ``python3 serve.py
    --api-key XYZ`` in argv[0]).
    """

    pending: str | None = None  # "value": mask the next word; "userpass": mask after its ':'
    short: str = ""  # the password short option of the last program named

    def step(self, word: str) -> str | None:
        """The word masked, or None when this pass leaves it to the text-wise pass."""
        pending, self.pending = self.pending, None
        if pending == "value" and not word.startswith("--"):
            return MASK
        if pending == "userpass":
            user, sep, password = word.partition(":")
            if sep and password:
                return f"{user}:{MASK}"
        if word[:1] != "-":
            program = word.rsplit("/", 1)[-1].lower().removesuffix(".exe")
            self.short = PASSWORD_SHORT_OPTIONS.get(program, self.short)
            return None
        if self.short and word.startswith(self.short):
            if word == self.short:
                self.pending = "value"
                return None
            return self.short + MASK  # -pSECRET
        if "=" not in word and len(word) > 2 and is_secret_name(word):
            self.pending = "value"  # --token VALUE
        elif word in ("-u", "--user"):
            self.pending = "userpass"  # curl -u user:password
        return None


def _redact_words(text: str, words: _Words) -> str:
    """A whole command in one string: text-wise first (a header spans words), then word by word."""
    text = redact_text(text)
    out = []
    pos = 0
    for m in _WORD.finditer(text):
        masked = words.step(m.group())
        if masked is not None:
            out.append(text[pos:m.start()] + masked)
            pos = m.end()
    out.append(text[pos:])
    return "".join(out)


def redact_cmdline(cmdline: list[str]) -> list[str]:
    """A copy of ``cmdline`` with secret values replaced by ``***``."""
    words = _Words()
    out: list[str] = []
    for arg in cmdline:
        if " " in arg or "\t" in arg or "\n" in arg:
            out.append(_redact_words(arg, words))
        else:
            masked = words.step(arg)
            out.append(redact_text(arg) if masked is None else masked)
    return out
