"""dimo's built-in plugins. Each module is registered through the ``dimo`` entry-point group in
pyproject.toml, exactly like a third-party plugin."""
