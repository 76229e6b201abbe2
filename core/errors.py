"""User-facing errors: one clear paragraph and exit code 2, never a traceback."""


class UserError(Exception):
    """Bad input from the user (config, paths, checkpoints). ``python -m core.run`` exits with 2."""
    exit_code = 2
