"""The `keras-lottery` command: `keras-lottery <command> --help` for each.

Each subcommand lives in its own module of this package and exposes
`register(subparsers)`; add new ones to `COMMANDS`. Building the parser
imports neither TensorFlow nor NumPy (each command imports what it needs
when it runs), so `--help` answers at once.

TensorFlow's start-up log (absl / C++ lines such as `cudart_stub`,
`cuda_platform` or the oneDNN notice) is hidden unless `--verbose` is given
or `KERAS_LOTTERY_VERBOSE=1` is set; a `TF_CPP_MIN_LOG_LEVEL` set by the user
is kept.
"""

import argparse
import errno
import importlib
import logging
import os
import sys

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

__all__ = ["main", "COMMANDS", "build_parser", "quiet_tensorflow"]

# module names inside keras_lottery.cli, in the order `--help` lists them
COMMANDS = ["run", "report", "export", "tune", "stability", "reproduce"]

VERBOSE_ENV = "KERAS_LOTTERY_VERBOSE"

# commands that run without TensorFlow (reading reports, drawing plots)
NO_TENSORFLOW = ("report",)


def build_parser():
    """The argument parser of every command (imports no TensorFlow)."""
    parser = argparse.ArgumentParser(
        prog="keras-lottery",
        description="Find lottery tickets in Keras models by iterative magnitude "
        "pruning with rewinding, and report / export them.",
    )
    verbose_help = (f"show TensorFlow's start-up and C++ log lines (hidden by default; "
                    f"also {VERBOSE_ENV}=1)")
    parser.add_argument("-v", "--verbose", action="store_true", help=verbose_help)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for name in COMMANDS:
        importlib.import_module(f"keras_lottery.cli.{name}").register(subparsers)
    for sub in subparsers.choices.values():
        if "--verbose" not in sub._option_string_actions:
            # SUPPRESS: `keras-lottery -v run` keeps the value the main parser set
            sub.add_argument("-v", "--verbose", action="store_true",
                             default=argparse.SUPPRESS, help=verbose_help)
    return parser


def _verbose_env():
    return os.environ.get(VERBOSE_ENV, "").strip().lower() not in ("", "0", "false", "no")


def quiet_tensorflow(verbose=False):
    """Imports TensorFlow, with its start-up log hidden unless `verbose`.

    Sets `TF_CPP_MIN_LOG_LEVEL=3` (unless the user set it), and while
    TensorFlow loads points the process's stderr at /dev/null: the absl lines
    printed before absl's logging is initialised ignore that variable. Python
    errors raised by the import still reach stderr. Afterwards absl's Python
    logger is set to ERROR. Does nothing once TensorFlow is imported.
    """
    if "tensorflow" in sys.modules:
        return
    if verbose:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "0")
        import tensorflow  # noqa: F401

        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):  # no real stderr descriptor
        saved = None
    if saved is not None:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        os.close(devnull)
    try:
        import tensorflow  # noqa: F401
        import tf_keras  # noqa: F401
        # device discovery (CUDA's cuInit) logs once at first use
        tensorflow.config.list_physical_devices()
    finally:
        if saved is not None:
            os.dup2(saved, 2)
            os.close(saved)
    try:
        from absl import logging as absl_logging

        absl_logging.set_verbosity(absl_logging.ERROR)
    except ImportError:
        pass


def _hide_checkpoint_lines(record):
    """Drops resume's per-round "IMP checkpoint: round N saved" lines (shown with --verbose)."""
    return not str(record.msg).startswith("IMP checkpoint: round")


def main(argv=None):
    """Entry point of the `keras-lottery` console script; returns an exit code."""
    parser = build_parser()
    if not (sys.argv[1:] if argv is None else argv):
        parser.print_help()  # the commands, rather than "COMMAND is required"
        print("\nStart with: keras-lottery run   (a lottery ticket and its controls, ~1 min)")
        return 2
    args = parser.parse_args(argv)
    verbose = bool(getattr(args, "verbose", False)) or _verbose_env()
    logging.basicConfig(
        level=logging.WARNING if getattr(args, "quiet", False) else logging.INFO,
        format="%(message)s",
        stream=sys.stdout,
    )
    if not verbose:
        for handler in logging.getLogger().handlers:
            handler.addFilter(_hide_checkpoint_lines)
    if args.command not in NO_TENSORFLOW and not getattr(args, "list_protocols", False):
        quiet_tensorflow(verbose)
    try:
        return int(args.func(args) or 0)
    # bad input and a diverged run (NaN loss) end with a message, not a traceback
    except (ValueError, TypeError, FileNotFoundError, FloatingPointError) as err:
        print(f"keras-lottery {args.command}: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # a full disk (report.DiskFullError names the file)
        if err.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        print(f"keras-lottery {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
