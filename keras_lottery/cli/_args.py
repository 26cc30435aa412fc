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
