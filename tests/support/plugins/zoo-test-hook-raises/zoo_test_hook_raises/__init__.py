"""A plugin that imports fine but whose ``zoo_models`` hook raises when called."""

from zoo import hookimpl


@hookimpl
def zoo_models() -> list[object]:
    raise ConnectionError("catalogue server unreachable")


@hookimpl
def zoo_builders() -> dict[str, str]:
    return {"hook_raises_arch": "zoo_test_hook_raises:missing"}
