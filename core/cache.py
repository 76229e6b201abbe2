"""Where dimo keeps things it makes once and reuses (pre-trained embedded teachers, feature classifiers)."""
import os
from pathlib import Path


def cache_dir(*parts: str) -> Path:
    root = Path(os.environ.get("DIMO_CACHE", Path.home() / ".cache" / "dimo"))
    path = root.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path
