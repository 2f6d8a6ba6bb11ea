"""zoo's built-in plugins, registered through the ``zoo`` entry-point group like any other."""
