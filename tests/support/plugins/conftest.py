"""The plugin packages here are data for the tests, not test modules: never collect them."""

collect_ignore_glob = ["zoo-*"]
