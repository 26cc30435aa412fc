"""Command-line arguments shared by several subcommands (no TensorFlow import)."""

#: the local datasets `run`, `stability` and `export` read
LOCAL_DATASETS = ("mnist1d", "fashion_mnist")
#: the built-in networks (keras_lottery.models.build)
MODELS = ("lenet", "conv2", "conv4", "conv6", "resnet20", "vgg16")
#: keras_lottery.masks.SCOPES, spelled out so that --help needs no TensorFlow
SCOPES = ("layerwise", "global", "erk")


def add_local_data_args(parser, dataset_default, dataset_help):
    """`--dataset` (one of LOCAL_DATASETS) and `--data-dir`."""
    parser.add_argument("--dataset", default=dataset_default, choices=list(LOCAL_DATASETS),
                        help=dataset_help)
    parser.add_argument("--data-dir", default=None,
                        help="folder with Fashion-MNIST IDX .gz files")


#: MNIST-1D examples a run needs: ~7 training examples per class after the splits
MIN_SAMPLES = 100


def add_num_samples_arg(parser, default):
    """`--num-samples` (MNIST-1D only); resolve it with `resolve_num_samples`."""
    parser.add_argument("--num-samples", type=int, default=None,
                        help=f"MNIST-1D examples generated, training + test (default: {default}; "
                        "--dataset mnist1d only: the other datasets have fixed splits)")


def resolve_num_samples(args, default):
    """Sets `args.num_samples` to the value used (None unless MNIST-1D) or refuses it.

    Raises:
      ValueError: `--num-samples` with another dataset (it would be silently
        ignored) or fewer than `MIN_SAMPLES`.
    """
    if args.num_samples is not None and args.dataset != "mnist1d":
        raise ValueError(f"--num-samples {args.num_samples} applies to --dataset mnist1d only "
                         f"({args.dataset} has its fixed training and test sets): drop it.")
    if args.dataset != "mnist1d":
        return
    if args.num_samples is None:
        args.num_samples = default
    if args.num_samples < MIN_SAMPLES:
        raise ValueError(f"--num-samples {args.num_samples} is too few: MNIST-1D splits "
                         "them into training, validation and test sets of 10 classes; pass "
                         f"at least {MIN_SAMPLES} (default {default}).")


def add_model_arg(parser, default, help_text, choices=MODELS):
    """`--model`, one of the built-in networks."""
    parser.add_argument("--model", default=default, choices=list(choices), help=help_text)


def block_arg(text):
    """argparse type of `--block`: "4x1" -> "4x1" (normalized), "1x1" -> None."""
    import argparse

    from keras_lottery.blocks import format_block, parse_block

    try:
        parse_block(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a block: give ROWSxCOLS, two positive integers, e.g. 4x1 "
            "(4 consecutive inputs of one output unit; 1x1: unstructured)") from err
    return format_block(text)


def add_block_args(parser):
    """`--block ROWSxCOLS` and `--block-score {l1,l2}` (keras_lottery.blocks)."""
    parser.add_argument("--block", type=block_arg, default=None, metavar="ROWSxCOLS",
                        help="prune Dense / Conv kernels in whole blocks of ROWS consecutive inputs "
                        "by COLS outputs, e.g. 4x1 (TFLite's native sparse FULLY_CONNECTED; "
                        "docs/block-tickets.md); default: weight by weight")
    parser.add_argument("--block-score", default=None, choices=["l1", "l2"],
                        help="how --block ranks blocks: l2 = RMS (default), l1 = mean |w|")
    parser.add_argument("--block-layers", default=None, choices=["all", "hidden"],
                        help="layers --block applies to: all (default) or hidden (the output "
                        "layer stays unstructured)")


#: keras_lottery.convergence.ROUND_ENDS and its defaults (no TensorFlow for --help)
ROUND_ENDS = ("epochs", "converged")
CONVERGE_DEFAULTS = {"converge_every": 100, "converge_tol": 0.15, "converge_patience": 5}


def add_round_end_args(parser):
    """`--round-end` and the convergence check's `--converge-every/-tol/-patience`."""
    parser.add_argument(
        "--round-end", default="epochs", choices=list(ROUND_ENDS),
        help="epochs (default): every round trains --epochs-per-round epochs; converged "
        "(Early-Bird): a round ends as soon as the mask it would produce has converged, "
        "its budget (--epochs-per-round epochs) is an upper bound, and the last round "
        "trains its whole budget (docs/concepts/early-bird.md)")
    parser.add_argument(
        "--converge-every", type=int, default=None, metavar="STEPS",
        help="with --round-end converged: steps between two mask checks (default: "
        f"{CONVERGE_DEFAULTS['converge_every']})")
    parser.add_argument(
        "--converge-tol", type=float, default=None, metavar="T",
        help="with --round-end converged: the largest fraction of the round's pruned weights "
        "on which the mask now may differ from each of the last --converge-patience checks' "
        f"masks (default: {CONVERGE_DEFAULTS['converge_tol']})")
    parser.add_argument(
        "--converge-patience", type=int, default=None, metavar="P",
        help="with --round-end converged: how many earlier checks' masks the mask now must be "
        f"within --converge-tol of (default: {CONVERGE_DEFAULTS['converge_patience']})")


def check_round_end_args(args):
    """Refuses --converge-* values that cannot work, naming the value and the fix.

    Raises:
      ValueError: for a --converge-* flag without --round-end converged, or a
        value out of range.
    """
    given = [k for k in CONVERGE_DEFAULTS if getattr(args, k, None) is not None]
    if args.round_end != "converged":
        if given:
            flags = ", ".join("--" + k.replace("_", "-") for k in given)
            raise ValueError(f"{flags} only apply with --round-end converged (the round end is "
                             f"{args.round_end}): add --round-end converged or drop them.")
        return
    if args.converge_every is not None and args.converge_every < 1:
        raise ValueError(f"--converge-every must be >= 1 (steps), got {args.converge_every} "
                         f"(default {CONVERGE_DEFAULTS['converge_every']}).")
    tol = args.converge_tol
    if tol is not None and not (tol == tol and 0.0 < tol < 1.0):
        raise ValueError(f"--converge-tol must be a fraction in (0, 1) of the round's pruned "
                         f"weights, got {tol} (default {CONVERGE_DEFAULTS['converge_tol']}).")
    if args.converge_patience is not None and args.converge_patience < 1:
        raise ValueError(f"--converge-patience must be >= 1 (checks), got "
                         f"{args.converge_patience} (default "
                         f"{CONVERGE_DEFAULTS['converge_patience']}).")


def round_end_config(args):
    """The round-end settings a run records (none for --round-end epochs, as before it existed)."""
    if args.round_end != "converged":
        return {}
    return {"round_end": args.round_end,
            **{k: CONVERGE_DEFAULTS[k] if getattr(args, k) is None else getattr(args, k)
               for k in CONVERGE_DEFAULTS}}
