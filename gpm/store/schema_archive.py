"""The archive manifest: every Parquet file `gpm archive` has committed.

A Parquet file under the archive folder counts only once its row is here:
the row is inserted in the same transaction that deletes the archived rows
from their table, so a file and the rows it holds are never both live. A
file on disk without a row (a run killed between rename and commit) is an
orphan: the next run adopts it after checking its rows, or sets it aside,
and the history reader never reads it meanwhile.
"""

SET_NAME = "gpm.archive"


def m0001_archive_files(db) -> None:
    db.execute(
        """
        CREATE TABLE archive_files (
            id INTEGER PRIMARY KEY,
            table_name TEXT NOT NULL,
            host TEXT NOT NULL,
            day TEXT NOT NULL,
            path TEXT NOT NULL UNIQUE,
            row_count INTEGER NOT NULL,
            min_ts_ms INTEGER NOT NULL,
            max_ts_ms INTEGER NOT NULL,
            size_bytes INTEGER NOT NULL,
            created_ms INTEGER NOT NULL
        )
        """
    )
    db.execute("CREATE INDEX archive_files_table_host_day ON archive_files (table_name, host, day)")




def m0002_archive_identity(db) -> None:
    """Which files are this database's, and where they are (#12.3).

    Two databases on one host used to share one archive folder, and each
    one's recovery set the other's part files aside as orphans. Since then a
    part file's name carries ``database_id``, and recovery touches only
    files with its own; ``folder`` is where `gpm archive` last wrote, so a
    database keeps finding its files whatever the default folder becomes.
    NULL in a database that archived before this step: it used the old
    default folder (``gpm.store.archive.archive_folder``).
    """
    db.execute(
        """
        CREATE TABLE archive_identity (
            id INTEGER PRIMARY KEY CHECK (id = 1),
            database_id TEXT NOT NULL,
            folder TEXT
        )
        """
    )
    db.execute("INSERT INTO archive_identity (id, database_id) VALUES (1, lower(hex(randomblob(8))))")


MIGRATIONS = [
    ("0001_archive_files", m0001_archive_files),
    ("0002_archive_identity", m0002_archive_identity),
]
