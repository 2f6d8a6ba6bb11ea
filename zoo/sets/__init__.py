"""Sets of artifacts: a plan (``zoo.toml``), its lock (``zoo.lock``) and ``zoo sync``."""
