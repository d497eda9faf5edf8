"""Ollama blob -> model name, so a runner's label reads ``llama3.1:8b``, not a digest.

``ollama runner --model <models>/blobs/sha256-<hex>`` names only the weights
file. ``<models>/manifests/<registry>/<namespace>/<model>/<tag>`` are JSON
manifests whose layers list that digest. Manifests are read once per models
folder and again only when a digest is not found (a model pulled since).
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

from gpm import jsontext

_BLOB = re.compile(r"^(.*)/blobs/sha256[-:]([0-9a-f]{64})$")
RESCAN_SECS = 30.0


def _model_name(rel: Path) -> str | None:
    parts = rel.parts
    if len(parts) < 4:
        return None
    registry, *namespace, model, tag = parts
    if registry == "registry.ollama.ai" and namespace == ["library"]:
        return f"{model}:{tag}"
    prefix = "/".join(namespace) if registry == "registry.ollama.ai" else "/".join([registry, *namespace])
    return f"{prefix}/{model}:{tag}"


class OllamaModels:
    def __init__(self) -> None:
        self._by_dir: dict[str, tuple[float, dict[str, str]]] = {}

    def _scan(self, models: str) -> dict[str, str]:
        digests: dict[str, str] = {}
        root = Path(models) / "manifests"
        for dirpath, _dirs, files in os.walk(root):
            for name in files:
                path = Path(dirpath) / name
                try:
                    layers = jsontext.loads(path.read_text(encoding="utf-8")).get("layers") or []
                except (OSError, ValueError, AttributeError):
                    continue
                model = _model_name(path.relative_to(root))
                for layer in layers:
                    if isinstance(layer, dict) and str(layer.get("mediaType", "")).endswith(".model") and model:
                        digest = str(layer.get("digest", "")).removeprefix("sha256:")
                        # Several tags may share weights: keep the shortest name.
                        if digest not in digests or len(model) < len(digests[digest]):
                            digests[digest] = model
        return digests

    def __call__(self, blob_path: str) -> str | None:
        """The model name for a blob path, or None when no manifest lists it."""
        m = _BLOB.match(blob_path)
        if not m:
            return None
        models, digest = m.group(1), m.group(2)
        cached = self._by_dir.get(models)
        if cached is None or (digest not in cached[1] and time.monotonic() - cached[0] > RESCAN_SECS):
            cached = self._by_dir[models] = (time.monotonic(), self._scan(models))
        return cached[1].get(digest)
