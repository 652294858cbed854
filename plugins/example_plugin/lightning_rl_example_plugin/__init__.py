"""An example lightning-rl plugin: everything is found through entry points (see pyproject.toml)."""
