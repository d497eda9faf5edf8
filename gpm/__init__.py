"""gpm: a GPU and local-LLM monitor for Linux workstations and servers.

The package is a library first: ``gpm.gpu`` reads GPUs, ``gpm.store`` keeps the
SQLite database, ``gpm.config`` resolves settings. ``gpm.cli`` is a thin Click
layer over them. Nothing here imports heavy modules at import time.
"""

__version__ = "0.1.0"
