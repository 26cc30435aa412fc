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
                        help="how --block ranks blocks: l1 = mean |w| (default), l2 = RMS")
