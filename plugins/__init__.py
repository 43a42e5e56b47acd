"""autoprune's built-in components, registered through the `autoprune` entry-point group
exactly as a third-party plugin would be (see pyproject.toml)."""
