"""Save what ``gpm.llm`` sees of Ollama: proxied requests, loaded-model sessions, ups and downs.

Every write of the ``llm_*`` tables is here (#14.5). ``gpm.llm`` parses and
polls without a database; its caller (the CLI, the daemon) hands it a
callable built here: ``RequestLog`` is the recording proxy's sink,
``SessionLog`` the watcher's. Each request and each poll is one
transaction (``write``: BEGIN IMMEDIATE), so a crash or a full disk keeps
or loses it whole.

The rows go through sqlite-utils (``insert``, ``update``): a request ends or
a poll comes every few seconds, far off the per-sample hot path, and a dict
keyed by column reads better than a column list kept in step with its
``?``s. The first ``Database`` costs ~0.2 s (import and plugin discovery),
paid when a log is built, not by the first request it saves.
"""

from __future__ import annotations

import sqlite3
from typing import Any, Callable

from gpm.llm.record import REQUEST_COLUMNS
from gpm.llm.sessions import PollResult
from gpm.store.db import utils_db, write

SESSION_COLUMNS = (
    "id", "host", "server", "model", "digest", "size_bytes", "size_vram_bytes", "context_length",
    "quantization", "parameter_size", "family", "loaded_at_ms", "last_seen_ms", "expires_at_ms",
    "unloaded_at_ms",
)


def save_request(conn: sqlite3.Connection, row: dict[str, Any]) -> int:
    """Insert one ``llm_requests`` row (inside the caller's ``write()``); return its id.

    Keys of ``row`` that are not columns are ignored, missing ones stored as NULL.
    """
    return _insert_request(utils_db(conn), row)


def _insert_request(db, row: dict[str, Any]) -> int:
    values = {key: row.get(key) for key in REQUEST_COLUMNS[1:]}
    values["stream"] = int(row["stream"])
    return db["llm_requests"].insert(values).last_pk


class RequestLog:
    """A proxy ``sink`` that stores each finished request, then hands it on.

    ``on_saved(row)`` (optional) gets the row with its new ``id``, e.g. to
    print it. Calls must not overlap (``RecordingProxy`` serialises them).
    """

    def __init__(self, conn: sqlite3.Connection, on_saved: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.conn = conn
        self.db = utils_db(conn)
        self.on_saved = on_saved

    def __call__(self, row: dict[str, Any]) -> None:
        with write(self.conn):
            row_id = _insert_request(self.db, row)
        if self.on_saved is not None:
            self.on_saved({"id": row_id, **row})


class SessionLog:
    """Applies polls of one Ollama server to ``llm_sessions`` and ``llm_events``.

    The open sessions are read from the database, not kept in memory, so a
    cron run every minute continues what the previous run saw: a new model
    opens a session, a model gone closes it, a model reloaded with another
    digest, size or context length closes the old session and opens a new
    one. An ``llm_events`` row is written only when the server's state
    differs from the last one recorded.
    """

    def __init__(self, conn: sqlite3.Connection, server: str, host: str) -> None:
        self.conn = conn
        self.db = utils_db(conn)
        self.server = server
        self.host = host

    def __call__(self, seen: PollResult) -> PollResult:
        """Record one poll in one transaction; ``seen`` comes back with what it changed."""
        with write(self.conn):
            if seen.up:
                self._up(seen)
            else:
                self._down(seen)
        return seen

    def last_event(self) -> tuple[str, str | None] | None:
        row = self.conn.execute(
            "SELECT kind, version FROM llm_events WHERE server = ? AND kind IN ('up', 'down') "
            "ORDER BY ts_ms DESC, id DESC LIMIT 1",
            (self.server,),
        ).fetchone()
        return None if row is None else (row[0], row[1])

    def last_version(self) -> str | None:
        row = self.conn.execute(
            "SELECT version FROM llm_events WHERE server = ? AND version IS NOT NULL "
            "ORDER BY ts_ms DESC, id DESC LIMIT 1",
            (self.server,),
        ).fetchone()
        return None if row is None else row[0]

    def _event(self, seen: PollResult, kind: str, detail: str | None) -> None:
        self.db["llm_events"].insert({"ts_ms": seen.ts_ms, "host": self.host, "server": self.server,
                                      "kind": kind, "version": seen.version, "detail": detail})
        seen.events.append(kind)

    def _open_rows(self) -> dict[str, dict]:
        """This server's open sessions by model."""
        rows = self.db["llm_sessions"].rows_where(
            "server = ? AND unloaded_at_ms IS NULL", [self.server],
            select="id, model, digest, size_bytes, context_length")
        return {row["model"]: row for row in rows}

    def _close(self, seen: PollResult, session: dict) -> None:
        self.db["llm_sessions"].update(session["id"], {"unloaded_at_ms": seen.ts_ms})
        seen.closed.append(session["model"])

    def _down(self, seen: PollResult) -> None:
        """Ollama did not answer: note it once and close its sessions (its runners died with it)."""
        last = self.last_event()
        if last is not None and last[0] == "down":
            return
        self._event(seen, "down", seen.error)
        for session in self._open_rows().values():
            self._close(seen, session)

    def _up(self, seen: PollResult) -> None:
        last = self.last_event()
        if last is None or last[0] != "up":
            self._event(seen, "up", None)
        elif (before := self.last_version()) != seen.version:
            self._event(seen, "version", f"was {before}")
        open_rows = self._open_rows()
        sessions = self.db["llm_sessions"]
        seen_models = set()
        for m in seen.models:
            if m.model in seen_models:
                continue
            seen_models.add(m.model)
            session = open_rows.pop(m.model, None)
            if session is not None and (session["digest"], session["size_bytes"], session["context_length"]) == (
                    m.digest, m.size_bytes, m.context_length):
                sessions.update(session["id"], {"last_seen_ms": seen.ts_ms, "size_vram_bytes": m.size_vram_bytes,
                                                "expires_at_ms": m.expires_at_ms})
                continue
            if session is not None:  # reloaded with other weights or another context size
                self._close(seen, session)
            sessions.insert({
                "host": self.host, "server": self.server, "model": m.model, "digest": m.digest,
                "size_bytes": m.size_bytes, "size_vram_bytes": m.size_vram_bytes,
                "context_length": m.context_length, "quantization": m.quantization,
                "parameter_size": m.parameter_size, "family": m.family,
                "loaded_at_ms": seen.ts_ms, "last_seen_ms": seen.ts_ms, "expires_at_ms": m.expires_at_ms,
            })
            seen.opened.append(m.model)
        for session in open_rows.values():
            self._close(seen, session)


def open_sessions(conn: sqlite3.Connection, server: str | None = None) -> list[dict]:
    """The sessions open now (of one server, or all), as dicts of ``SESSION_COLUMNS``."""
    sql = f"SELECT {', '.join(SESSION_COLUMNS)} FROM llm_sessions WHERE unloaded_at_ms IS NULL"
    args: tuple = ()
    if server is not None:
        sql += " AND server = ?"
        args = (server,)
    return [dict(zip(SESSION_COLUMNS, row)) for row in conn.execute(sql + " ORDER BY loaded_at_ms, id", args)]
