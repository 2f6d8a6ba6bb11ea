"""A plugin that cannot even be imported: zoo must disable it and keep the others working."""

raise RuntimeError("zoo-test-broken needs a GPU driver that is not installed")
