"""(being written)"""


def add_commands(sub) -> None:
    """Register this module's subcommands on the `lakehouse` parser."""
