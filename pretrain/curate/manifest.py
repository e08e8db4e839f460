"""Resumable JSON-lines manifests of the curation tools (paper App. C: download, crop)."""
import os
from pathlib import Path

from common.logger import read_jsonl


def load_manifest(path) -> list:
    """Records of a JSONL manifest (none if missing). A torn last line left by a killed run is
    cut off first, so the next appended record starts on a fresh line."""
    path = Path(path)
    if not path.exists():
        return []
    with open(path, "rb+") as f:
        data = f.read()
        if data and not data.endswith(b"\n"):
            f.truncate(data.rfind(b"\n") + 1)
            f.flush()
            os.fsync(f.fileno())
    return read_jsonl(path)
