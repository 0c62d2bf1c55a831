"""Built-in plugins, registered through the core's own ``darkmesh`` entry points."""
