"""dimo's plugin registry: pluggy hookspecs, entry-point discovery, name -> plugin class + config schema."""
from registry.hookspecs import hookimpl, hookspec
from registry.registry import KINDS, Registry, PluginInfo, get_registry, reset_registry

__all__ = ["hookimpl", "hookspec", "KINDS", "Registry", "PluginInfo", "get_registry", "reset_registry"]
