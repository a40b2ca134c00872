"""Subcommands of the `convmesh` CLI, one small module each.

A module exposes ``add_parser(subparsers)``: it adds its subparser(s) and sets
``func`` (``args -> exit code``) with ``set_defaults``. Register a new module by
adding its name to ``COMMAND_MODULES`` in ops/cli.py.
"""
