"""dimo's built-in recipes: tuned values per teacher x method, one YAML file each, ``<teacher>/<recipe>.yaml``.

A recipe file has the format of a ``config=`` file (plus ``extends: <recipe>``); resolution applies it between
the defaults and the user's files and command line (see core/recipes.py and docs/plugins.md). This module
declares the folder through the same entry-point hook third-party packages use.
"""
from pathlib import Path

from registry import hookimpl


@hookimpl
def dimo_recipes():
    return Path(__file__).parent
