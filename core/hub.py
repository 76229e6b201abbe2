"""Finding weight files: a local file, a local folder, or a Hugging Face hub id (through huggingface_hub,
with its cache and ``HF_HUB_OFFLINE``)."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Callable, Optional

from core.errors import UserError

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def resolve_file(spec: str, filename: str, field: str = "teacher.checkpoint",
                 size: Optional[Callable[[], str]] = None) -> Path:
    """``spec`` is a file, a folder holding ``filename``, or a hub repo id holding ``filename``. ``size``: says how
    big the file is, for the message when it must be downloaded (called only then)."""
    path = Path(spec).expanduser()
    if path.is_file():
        return path
    if path.is_dir():
        candidate = path / filename
        if candidate.is_file():
            return candidate
        raise UserError(f"{field}='{spec}' is a folder without '{filename}' "
                        f"(it holds: {', '.join(sorted(p.name for p in path.iterdir())[:10]) or 'nothing'})")
    if HUB_ID.match(spec) and not spec.startswith((".", "/", "~")):
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError
        try:
            return Path(hf_hub_download(repo_id=spec, filename=filename))
        except LocalEntryNotFoundError:
            how_big = f" ({size()})" if size else ""
            raise UserError(f"{field}='{spec}': '{filename}'{how_big} is not in the local hub cache and the hub "
                            f"cannot be reached (offline or HF_HUB_OFFLINE=1). Download it where the hub can be "
                            f"reached: hf download {spec} {filename} --local-dir <dir>, then set {field}=<dir> "
                            f"(or copy the hub cache, HF_HOME, over)") from None
        except (HfHubHTTPError, OSError, ValueError) as exc:
            raise UserError(f"{field}='{spec}': could not fetch '{filename}' from the hub: {exc}") from None
    raise UserError(f"{field}='{spec}' does not exist: give a file, a folder holding '{filename}', or a hub id "
                    f"such as 'org/name'")
