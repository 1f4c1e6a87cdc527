"""``.. cli-help::`` -- the command line's help, rendered from its argparse parser.

The CLI page can then never drift from the code: every subcommand's options
come from the same parser ``lbsdispatch`` runs.
"""
from __future__ import annotations

import argparse

from docutils import nodes
from sphinx.util.docutils import SphinxDirective


def _parser() -> argparse.ArgumentParser:
    from lbsdispatch import cli

    for name in ("build_parser", "make_parser", "_parser", "parser"):
        make = getattr(cli, name, None)
        if callable(make):
            return make()
    raise RuntimeError("lbsdispatch.cli has no parser factory (build_parser)")


def _subcommands(parser: argparse.ArgumentParser):
    for action in parser._actions:          # argparse keeps subparsers here only
        if isinstance(action, argparse._SubParsersAction):
            return sorted(action.choices.items())
    return []


class CliHelp(SphinxDirective):
    """Insert ``lbsdispatch --help`` and the help of every subcommand."""

    has_content = False

    def run(self):
        parser = _parser()
        out = []
        top = nodes.section(ids=["cli-lbsdispatch"])
        top += nodes.title(text="lbsdispatch")
        top += nodes.literal_block(text=parser.format_help())
        out.append(top)
        for name, sub in _subcommands(parser):
            sec = nodes.section(ids=[f"cli-{name}"])
            sec += nodes.title(text=f"lbsdispatch {name}")
            sec += nodes.literal_block(text=sub.format_help())
            out.append(sec)
        return out


def setup(app):
    app.add_directive("cli-help", CliHelp)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
