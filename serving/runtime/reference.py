"""The drift reference saved beside a model's boosters (`reference.json`; see `serving.monitoring.drift`)."""

from __future__ import annotations

import json
from pathlib import Path

REFERENCE_FILE = "reference.json"


def save_reference(directory: str | Path, reference: dict | None) -> None:
    if reference is not None:
        (Path(directory) / REFERENCE_FILE).write_text(json.dumps(reference, indent=1))


def load_reference(directory: str | Path) -> dict | None:
    path = Path(directory) / REFERENCE_FILE
    return json.loads(path.read_text()) if path.is_file() else None
