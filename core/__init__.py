"""dimo core: the engine, the abstract interfaces, the config CLI (`python -m core.run`). Knows no concrete plugin."""
