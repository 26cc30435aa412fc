"""The `keras-lottery` command: `keras-lottery <command> --help` for each.

Each subcommand lives in its own module of this package and exposes
`register(subparsers)`; add new ones to `COMMANDS`.
"""

import argparse
import importlib
import logging
import os
import sys

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__all__ = ["main", "COMMANDS"]

# module names inside keras_lottery.cli, in the order `--help` lists them
COMMANDS = ["run", "report", "export", "tune", "stability"]


def build_parser():
    parser = argparse.ArgumentParser(
        prog="keras-lottery",
        description="Find lottery tickets in Keras models by iterative magnitude "
        "pruning with rewinding, and report / export them.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for name in COMMANDS:
        importlib.import_module(f"keras_lottery.cli.{name}").register(subparsers)
    return parser


def main(argv=None):
    """Entry point of the `keras-lottery` console script; returns an exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING if getattr(args, "quiet", False) else logging.INFO,
        format="%(message)s",
        stream=sys.stdout,
    )
    try:
        return int(args.func(args) or 0)
    # bad input and a diverged run (NaN loss) end with a message, not a traceback
    except (ValueError, TypeError, FileNotFoundError, FloatingPointError) as err:
        print(f"keras-lottery {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
