"""A plugin whose formats cannot load: one names a module that does not exist, the other's
module prints to stdout and calls ``sys.exit(0)`` when imported.

Only those formats may fail (``zoo fetch --format broken_fmt`` names this plugin); ``zoo info``
and every other format keep working.
"""

from zoo import hookimpl


@hookimpl
def zoo_exporters() -> dict[str, str]:
    return {
        "broken_fmt": "zoo_test_broken_exporter.not_there:BrokenExporter",
        "exits_fmt": "zoo_test_broken_exporter.exits:ExitingExporter",
    }
