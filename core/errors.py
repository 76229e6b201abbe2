"""User-facing errors: one clear paragraph and exit code 2, never a traceback."""


class UserError(Exception):
    """Bad input from the user (config, paths, checkpoints). ``python -m core.run`` exits with 2."""
    exit_code = 2


def check_writable_dir(path, field: str, value=None) -> None:
    """Refuse an output folder that is a file, or that cannot be created or written, before any work starts.
    Creates nothing, so a refused run leaves no folder behind. ``value``: what the user wrote, if not ``path``
    (e.g. the file whose folder this is)."""
    import os
    from pathlib import Path
    p = Path(path).expanduser()
    given = f"{field}='{value if value is not None else path}'"
    if p.exists() and not p.is_dir():
        raise UserError(f"{given}: '{p}' is a file, not a folder; choose another path")
    probe = p
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise UserError(f"{given} cannot be created: '{probe}' is a file, not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise UserError(f"{given} cannot be {'written' if probe == p else 'created'}: no write "
                        f"permission on '{probe}'")
