"""Network addresses in settings: host names, http(s) URLs and ``HOST:PORT`` listen addresses.

Checked when the configuration is read, so that ``gpm config check`` rejects
what ``connect()`` or ``bind()`` would only reject later (#12.11); the daemon
and the servers parse listen addresses with the same ``parse_listen``.
"""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import urlsplit

_HOST_NAME = re.compile(r"^[A-Za-z0-9_]([A-Za-z0-9_.-]*[A-Za-z0-9_])?\.?$")


def host_problem(host: str) -> str | None:
    """Why ``host`` cannot be an IP address or a DNS name, or None.

    Checked when the configuration is read, so that ``gpm config check``
    rejects what ``connect()`` or ``bind()`` would only reject later (#12.11).
    """
    if ":" in host:
        try:
            ipaddress.IPv6Address(host.split("%", 1)[0])
        except ValueError:
            return f"{host!r} is not an IPv6 address"
        return None
    if re.fullmatch(r"[0-9.]+", host):
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            return f"{host!r} is not an IPv4 address"
        return None
    if not _HOST_NAME.match(host) or len(host) > 253:
        return f"{host!r} is not a host name"
    return None


def url_problem(value: str) -> str | None:
    """Why ``value`` is not an http(s) URL the Ollama and OTLP clients can use, or None.

    The same ``urlsplit`` the clients call, so a URL that passes here does
    not fail at use with "Invalid IPv6 URL" or "Port out of range".
    """
    if any(ch.isspace() or ord(ch) < 32 or ord(ch) == 127 for ch in value):
        return "a URL holds no spaces or control characters"
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError as err:
        return str(err)
    if parts.scheme not in ("http", "https"):
        return "the scheme must be http or https"
    if not parts.hostname:
        return "the URL names no host"
    if port == 0:
        return "port 0 cannot be connected to"
    return host_problem(parts.hostname)


def parse_listen(value: str, default_host: str = "127.0.0.1") -> tuple[str, int]:
    """``"HOST:PORT"``, ``":PORT"``, ``"PORT"`` or ``"[::1]:PORT"`` -> (host, port).

    A ValueError says what is wrong, or is only ``value`` when the form is.
    """
    text = value.strip()
    if text.isdigit():
        host, port_text = default_host, text
    elif text.startswith("["):
        end = text.find("]")
        if end < 0 or not text[end + 1:].startswith(":"):
            raise ValueError(value)
        host, port_text = text[1:end], text[end + 2:]
        if ":" not in host:
            raise ValueError(f"{host!r} in brackets is not an IPv6 address")
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep:
            raise ValueError(value)
        host = host or default_host
    if not port_text.isascii() or not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise ValueError(value)
    problem = host_problem(host)
    if problem:
        raise ValueError(problem)
    return host, int(port_text)
