"""The hooks a dimo plugin implements: ``dimo_register`` (plugin classes) and/or ``dimo_recipes`` (recipe files).

A plugin is a module named by an entry point in the ``dimo`` group::

    [project.entry-points.dimo]
    my_plugin = "my_package.plugin"

and that module implements::

    from registry import hookimpl

    @hookimpl
    def dimo_register(register):
        register("divergence", "my_div", MyDivergence)

``register(kind, name, cls)`` adds a class whose nested ``Config`` (a pydantic model with
``extra="forbid"``) is the schema of its options. Built-in plugins use the same mechanism.

A package that ships recipes (tuned values per teacher x method, see docs/plugins.md) also implements::

    @hookimpl
    def dimo_recipes():
        return Path(__file__).parent / "recipes"     # holds <teacher>/<name>.yaml
"""
import pluggy

PROJECT = "dimo"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def dimo_register(register):
    """Register plugin classes: call ``register(kind, name, cls)`` once per class."""


@hookspec
def dimo_recipes():
    """The folder of this plugin's recipe files, ``<folder>/<teacher>/<name>.yaml`` (one recipe each)."""
