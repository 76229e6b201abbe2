"""The one hook a dimo plugin implements.

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
"""
import pluggy

PROJECT = "dimo"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def dimo_register(register):
    """Register plugin classes: call ``register(kind, name, cls)`` once per class."""
