"""The papers' experiments as protocols: `keras-lottery reproduce NAME`.

A `Protocol` is one experiment of Frankle & Carbin (2019, "The Lottery
Ticket Hypothesis") or Frankle, Dziugaite, Roy & Carbin (2020, "Linear Mode
Connectivity and the Lottery Ticket Hypothesis"): the network, optimizer,
learning rate and schedule, batch size, training length per round, pruning
rates and scope, the series trained (a ticket and its controls, or rewinding
to θ0 vs late rewinding vs warm-up), seeds, and the paper's numbers to hold
the result against (`PaperFigure`, each with its source and the dataset the
paper used). `resolve(name, budget, dataset)` turns a protocol into a `Plan`
of concrete settings; `run(plan, out)` trains it with
`experiment.run_experiment` (one call per series) and writes

    OUT/runs/<series>/...    each series' reports (seed_<s>/<ticket|control>/)
    OUT/summary.json         plan, per-series summary, the paper comparison
    OUT/comparison.csv       the paper comparison rows
    OUT/report.md            protocol, budget, results and comparison, as text
    OUT/figure.png           the series against % weights remaining

Budgets: "paper" is the protocol unchanged (a GPU job); "small" is a
CPU-sized variant whose changes each protocol lists (`Protocol.small`,
shown by `keras-lottery reproduce --list`). Importing this module loads no
TensorFlow; `run` does.

Example:
    >>> from keras_lottery import reproduce
    >>> plan = reproduce.resolve("lenet", budget="small")
    >>> plan.model, plan.optimizer, plan.learning_rate, plan.batch_size
    ('lenet', 'adam', 0.0012, 60)
"""

import dataclasses
import logging
import math
import os
import time

__all__ = [
    "BUDGETS",
    "DATASETS",
    "MATCH_POINTS",
    "PROTOCOLS",
    "PaperFigure",
    "Plan",
    "Protocol",
    "Series",
    "describe",
    "format_comparison_rows",
    "resolve",
    "run",
]

logger = logging.getLogger("keras_lottery")

BUDGETS = ("paper", "small")
DATASETS = ("fashion_mnist", "cifar10")

#: a ticket "matches" the dense network when its mean test accuracy is at
#: most this many points below the dense network's (our threshold)
MATCH_POINTS = 0.5

LTH = "Frankle & Carbin 2019, The Lottery Ticket Hypothesis (ICLR)"
LMC = "Frankle, Dziugaite, Roy & Carbin 2020, Linear Mode Connectivity and the LTH (ICML)"
CPU_REPRO = "a published 2-core CPU reproduction of Frankle & Carbin 2019"


@dataclasses.dataclass(frozen=True)
class PaperFigure:
    """One of a paper's numbers, to hold a reproduction against.

    Attributes:
      measure: what is compared; one of the measures `run` computes
        ("dense_accuracy", "dense_early_stop", "accuracy_at", "early_stop_at",
        "best_speedup", "best_gain", "smallest_matching", "final_gap").
      label: what it is, in words.
      value: the paper's number (None for a qualitative result, see `text`).
      unit: "%", "steps", "x" or "points".
      source: where the number is from.
      dataset: the dataset the paper measured it on (e.g. "CIFAR-10").
      series: which of our series it concerns ("ticket", "reinit", "theta0", ...).
      weights_remaining: the fraction of weights it is measured at, if any.
      text: the paper's result in words, for a qualitative one.
    """

    measure: str
    label: str
    value: float
    unit: str
    source: str
    dataset: str
    series: str = "ticket"
    weights_remaining: float = None
    text: str = None


@dataclasses.dataclass(frozen=True)
class Series:
    """One way of finding tickets in a protocol, trained as its own experiment.

    Attributes:
      name: folder and key ("ticket", "theta0", "late", "warmup").
      label: what it is, in words.
      rewind_steps: the rewind point k in the paper's iterations (scaled with
        the training length by a smaller budget).
      warmup_steps: linear learning-rate warm-up, in the paper's iterations.
      learning_rate: the peak rate if it differs from the protocol's.
      controls: the controls trained with it ("reinit", "random").
    """

    name: str
    label: str
    rewind_steps: int = 0
    warmup_steps: int = 0
    learning_rate: float = None
    controls: tuple = ()


@dataclasses.dataclass(frozen=True)
class Protocol:
    """One of the papers' experiments (see the module docstring).

    Attributes:
      name, title, summary: the command's NAME, a heading, one line.
      model: a `models.MODELS` name; model_kwargs: extra arguments
        (weight decay, width).
      optimizer: "adam" or "sgd" (momentum 0.9); learning_rate: its rate.
      batch_size: examples per step.
      training_steps: iterations per round (each round trains whole epochs:
        the count is rounded up to a whole number of epochs of the data used).
      lr_boundaries: iterations at which the rate is multiplied by 0.1.
      rounds, prune_rate, layer_rates, output_layer_rate, scope: as for `IMP`.
      series: the `Series` trained.
      seeds: how many seeds (0, 1, ...).
      eval_every: steps between validation evaluations (the early-stopping
        iteration's resolution); None: at epoch ends.
      val_size: training examples held out for validation.
      sources: setting -> where it is from.
      paper: the `PaperFigure`s compared.
      small: the "small" budget's changes: Plan field -> value.
      small_note: what "small" changes, in words (for --help and the docs).
    """

    name: str
    title: str
    summary: str
    model: str
    optimizer: str
    learning_rate: float
    batch_size: int
    training_steps: int
    rounds: int
    prune_rate: float
    series: tuple
    seeds: int
    sources: dict
    paper: tuple
    small: dict
    small_note: str
    model_kwargs: dict = dataclasses.field(default_factory=dict)
    lr_boundaries: tuple = ()
    layer_rates: dict = None
    output_layer_rate: float = None
    scope: str = "layerwise"
    eval_every: int = 100
    val_size: int = 5000


def _lenet():
    return Protocol(
        name="lenet", title="LeNet-300-100: winning tickets vs random re-init and random pruning",
        summary="LeNet-300-100, Adam 1.2e-3, batch 60, 50K it/round, 20% hidden / 10% output "
        "per round to 3.5%, θ0, controls reinit + random, 3 seeds",
        model="lenet", optimizer="adam", learning_rate=1.2e-3, batch_size=60,
        training_steps=50_000, rounds=15, prune_rate=0.2, output_layer_rate=0.1,
        series=(Series("ticket", "IMP, rewind to θ0", controls=("reinit", "random")),),
        seeds=3, eval_every=100,
        sources={"network, optimizer, rate, batch, 50K iterations, 20%/10% rates": f"{LTH}, Fig. 2 / Sec. 2",
                 "15 rounds (3.5% of the weights remain)": "our choice: about where the paper reports tickets still matching (3.6%)",
                 "5,000 validation examples, evaluation every 100 it": f"{LTH} (MNIST: 55K/5K)"},
        paper=(
            PaperFigure("dense_early_stop", "dense early-stopping iteration", 5900, "steps", CPU_REPRO, "MNIST"),
            PaperFigure("dense_accuracy", "dense test accuracy at early stop", 98.04, "%", CPU_REPRO, "MNIST"),
            PaperFigure("accuracy_at", "ticket test accuracy at early stop", 98.35, "%", CPU_REPRO,
                        "MNIST", weights_remaining=0.211),
            PaperFigure("early_stop_at", "ticket early-stopping iteration", 2600, "steps", CPU_REPRO,
                        "MNIST", weights_remaining=0.211),
            PaperFigure("accuracy_at", "ticket test accuracy at early stop", 98.20, "%", CPU_REPRO,
                        "MNIST", weights_remaining=0.087),
            PaperFigure("early_stop_at", "ticket early-stopping iteration", 4100, "steps", CPU_REPRO,
                        "MNIST", weights_remaining=0.087),
            PaperFigure("accuracy_at", "random re-init test accuracy at early stop", 97.52, "%",
                        CPU_REPRO, "MNIST", series="reinit", weights_remaining=0.087),
            PaperFigure("early_stop_at", "random re-init early-stopping iteration", 11300, "steps",
                        CPU_REPRO, "MNIST", series="reinit", weights_remaining=0.087),
            PaperFigure("smallest_matching", "fewest weights at which the ticket still matches dense",
                        3.6, "%", LTH, "MNIST"),
        ),
        small=dict(train_size=5000, val_size=1000, test_size=2000, training_steps=2000, rounds=10,
                   seeds=1, eval_every=50),
        small_note="5,000 training / 1,000 validation / 2,000 test examples, 2,000 it per round "
        "(24 epochs), 10 rounds (to 10.8%), 1 seed, evaluation every 50 it",
    )


def _conv(depth):
    rate = {2: 2e-4, 4: 3e-4, 6: 3e-4}[depth]
    steps = {2: 20_000, 4: 25_000, 6: 30_000}[depth]
    conv_rate = {2: 0.10, 4: 0.10, 6: 0.15}[depth]
    speedup = {2: (3.5, 0.088), 4: (3.5, 0.092), 6: (2.5, 0.151)}[depth]
    gain = {2: 3.4, 4: 3.5, 6: 3.3}[depth]
    return Protocol(
        name=f"conv{depth}", title=f"Conv-{depth}: winning tickets vs random re-init and random pruning",
        summary=f"Conv-{depth}, Adam {rate:g}, batch 60, {steps // 1000}K it/round, conv "
        f"{100 * conv_rate:.0f}% / fc 20% / output 10% per round, θ0, controls reinit + random, 3 seeds",
        model=f"conv{depth}", optimizer="adam", learning_rate=rate, batch_size=60,
        training_steps=steps, rounds=15, prune_rate=0.2, output_layer_rate=0.1,
        layer_rates={f"conv{i + 1}": conv_rate for i in range(depth)},
        series=(Series("ticket", "IMP, rewind to θ0", controls=("reinit", "random")),),
        seeds=3, eval_every=100,
        sources={f"network, Adam {rate:g}, batch 60, {steps // 1000}K iterations, conv "
                 f"{100 * conv_rate:.0f}% / fc 20% / output 10%": f"{LTH}, Fig. 2 / Sec. 3",
                 "15 rounds": "our choice (fc layers at 3.5%)",
                 "5,000 validation examples, evaluation every 100 it": f"{LTH} (CIFAR-10: 45K/5K)"},
        paper=(
            PaperFigure("best_speedup", "best early-stop speed-up (dense it / ticket it)", speedup[0],
                        "x", LTH, "CIFAR-10", weights_remaining=speedup[1]),
            PaperFigure("best_gain", "best test-accuracy gain over dense", gain, "points", LTH,
                        "CIFAR-10"),
        ),
        small=dict(train_size=2000, val_size=500, test_size=1000, training_steps=200, rounds=5,
                   seeds=1, eval_every=20),
        small_note="2,000 training / 500 validation / 1,000 test examples, 200 it per round "
        "(6 epochs), 5 rounds, 1 seed, evaluation every 20 it",
    )


def _deep(name):
    resnet = name == "resnet20"
    late = 2000 if resnet else 1000
    warm_rate = 0.03 if resnet else 0.1
    rounds = 8 if resnet else 19
    final = 0.8 ** rounds
    label = "ResNet-20" if resnet else "VGG-16"
    dense = 91.7 if resnet else 93.7
    wd = 1e-4
    kwargs = dict(weight_decay=wd / 2)  # Keras' L2(c) adds c·Σw²: gradient 2c·w = SGD's decay 1e-4
    small_kwargs = dict(kwargs, **({"width": 8} if resnet else {"width_multiplier": 0.125}))
    return Protocol(
        name=name, title=f"{label}: rewinding to θ0 vs late rewinding vs learning-rate warm-up",
        summary=f"{label}, SGD 0.1 momentum 0.9, weight decay 1e-4, batch 128, 63K it/round "
        f"(x0.1 at 32K, 48K), global 20%/round to {100 * final:.1f}%; series θ0, late rewinding "
        f"to {late} it, θ0 with 30K it warm-up; 2 seeds",
        model=name, optimizer="sgd", learning_rate=0.1, batch_size=128, training_steps=63_000,
        lr_boundaries=(32_000, 48_000), rounds=rounds, prune_rate=0.2, scope="global",
        model_kwargs=kwargs, eval_every=None,
        series=(Series("theta0", "IMP, rewind to θ0"),
                Series("late", f"IMP, late rewinding to {late} it", rewind_steps=late),
                Series("warmup", f"IMP, rewind to θ0, {warm_rate:g} with warm-up",
                       warmup_steps=30_000, learning_rate=warm_rate)),
        seeds=2,
        sources={"SGD 0.1, momentum 0.9, weight decay 1e-4, batch 128, 63K it, x0.1 at 32K / 48K":
                 f"{LMC}, Table 1 (160 epochs of CIFAR-10, drops at epochs 80 / 120)",
                 f"global pruning 20% per round, {rounds} rounds ({100 * final:.1f}% remain)":
                 f"{LMC}, Table 1 ({'16.8' if resnet else '1.5'}% of the weights)",
                 f"late rewinding to {late} it": f"{LMC}: dense {label} stable from ~{late} it",
                 f"warm-up series: {warm_rate:g} with 30K it of linear warm-up": f"{LMC}, Table 1 ('Warmup')",
                 "5,000 validation examples held out, evaluation at epoch ends": "ours (the papers train on all 50K)"},
        paper=(
            PaperFigure("dense_accuracy", "dense test accuracy", dense, "%", f"{LMC}, Table 1", "CIFAR-10",
                        series="theta0"),
            PaperFigure("final_gap", "rewind to θ0: ticket - dense", None,
                        "points", LMC, "CIFAR-10", series="theta0", weights_remaining=final,
                        text="not matching (only LeNet tickets match at k = 0)"),
            PaperFigure("final_gap", "late rewinding: ticket - dense", None,
                        "points", LMC, "CIFAR-10", series="late", weights_remaining=final,
                        text="matching"),
            PaperFigure("final_gap", "θ0 with warm-up: ticket - dense", None,
                        "points", LMC, "CIFAR-10", series="warmup", weights_remaining=final,
                        text="matching"),
        ),
        small=dict(train_size=2000, val_size=500, test_size=1000, training_steps=320, rounds=4,
                   prune_rate=round(1 - final ** 0.25, 3), seeds=1, model_kwargs=small_kwargs),
        small_note=f"2,000 training / 500 validation / 1,000 test examples, "
        f"{'width 8 (of 16)' if resnet else 'width x0.125'}, 320 it per round (20 epochs) with the "
        f"LR drops, rewind point and warm-up scaled by 320/63K, the paper's final sparsity "
        f"({100 * final:.1f}%) in 4 rounds of {100 * (1 - final ** 0.25):.1f}%, 1 seed",
    )


PROTOCOLS = {p.name: p for p in [_lenet(), _conv(2), _conv(4), _conv(6), _deep("resnet20"),
                                 _deep("vgg16")]}


@dataclasses.dataclass(frozen=True)
class Plan:
    """A protocol made concrete for one budget and dataset (what `run` trains).

    Fields as in `Protocol`, plus: budget, dataset, and train_size /
    test_size (None: the whole split), and run_eagerly (compile the models
    to run eagerly: for runs of a few steps, where tracing Keras' train
    function costs more than the steps), and resume (checkpoint each seed's
    ticket after every round so that a rerun continues it: the default;
    off, a rerun still skips finished seeds). `scale` is the factor a shorter
    training applies to the schedule's iteration counts (LR drops, rewind
    points, warm-up).
    Use `dataclasses.replace(plan, ...)` for a variant.
    """

    name: str
    budget: str
    dataset: str
    model: str
    model_kwargs: dict
    optimizer: str
    learning_rate: float
    batch_size: int
    training_steps: int
    lr_boundaries: tuple
    rounds: int
    prune_rate: float
    layer_rates: dict
    output_layer_rate: float
    scope: str
    series: tuple
    seeds: int
    eval_every: int
    val_size: int
    train_size: int = None
    test_size: int = None
    run_eagerly: bool = False
    resume: bool = True

    @property
    def protocol(self):
        return PROTOCOLS[self.name]

    @property
    def scale(self):
        """training_steps / the protocol's: the factor on LR drops, rewind points and warm-up."""
        return self.training_steps / self.protocol.training_steps

    def get_config(self):
        """The plan as JSON types (recorded in every report of the run)."""
        config = dataclasses.asdict(self)
        config["series"] = [dataclasses.asdict(s) for s in self.series]
        config["lr_boundaries"] = list(self.lr_boundaries)
        config["scale"] = self.scale
        for s in config["series"]:
            s["controls"] = list(s["controls"])
        return config


def resolve(name, budget="paper", dataset="fashion_mnist", seeds=None):
    """The `Plan` of protocol `name` under `budget` on `dataset`.

    Args:
      name: a key of `PROTOCOLS`.
      budget: "paper" (the protocol unchanged) or "small" (its `small` changes).
      dataset: "fashion_mnist" (local IDX files) or "cifar10" (through `tfds.load`).
      seeds: optional number of seeds instead of the budget's.

    Returns:
      A `Plan`.

    Raises:
      ValueError: for an unknown name, budget or dataset (listing the known
        ones) or a seed count < 1.
    """
    if name not in PROTOCOLS:
        raise ValueError(f"Unknown experiment {name!r}: choose one of {sorted(PROTOCOLS)} "
                         "(keras-lottery reproduce --list says what each runs).")
    if budget not in BUDGETS:
        raise ValueError(f"Unknown budget {budget!r}: choose one of {list(BUDGETS)} (paper: the "
                         "paper's protocol, for a GPU; small: a CPU-sized variant).")
    if dataset not in DATASETS:
        raise ValueError(f"Unknown dataset {dataset!r}: choose one of {list(DATASETS)}.")
    p = PROTOCOLS[name]
    fields = {f.name for f in dataclasses.fields(Plan)}
    values = {k: getattr(p, k) for k in fields if hasattr(p, k)}
    values.update(name=name, budget=budget, dataset=dataset, layer_rates=dict(p.layer_rates or {}),
                  model_kwargs=dict(p.model_kwargs))
    if budget == "small":
        values.update(p.small)
    if seeds is not None:
        if isinstance(seeds, bool) or int(seeds) != seeds or seeds < 1:
            raise ValueError(f"seeds must be an integer >= 1, got {seeds!r}.")
        values["seeds"] = int(seeds)
    return Plan(**values)


def describe(name=None):
    """What `keras-lottery reproduce --list` prints: each protocol, its sources and budgets.

    Args:
      name: one protocol, or None for all.

    Returns:
      The text.
    """
    names = [name] if name else list(PROTOCOLS)
    lines = []
    for key in names:
        p = PROTOCOLS[key]
        lines += [f"{key:<9} {p.summary}", f"{'':<9} --budget small: {p.small_note}"]
    lines += ["", "Data: Fashion-MNIST from the local IDX files (default), or --dataset cifar10 "
              "through tfds.load. The paper's numbers each summary compares against are on "
              "MNIST (LeNet) or CIFAR-10 (the rest)."]
    return "\n".join(lines)


# -- running a plan ------------------------------------------------------------

#: what `run(fresh=True)` deletes from OUT (only these names)
OUTPUT_FILES = ("runs", "summary.json", "comparison.csv", "report.md", "figure.png")


def _subset(pair, n):
    return pair if n is None else (pair[0][:n], pair[1][:n])


def _arrays(dataset, split, data_dir):
    import numpy as np

    from keras_lottery import data

    ds = data.load(dataset, split=split, batch_size=4096, data_dir=data_dir, source="tfds",
                   shuffle=False, download=False)
    xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in ds])
    return np.concatenate(xs).astype(np.float32), np.concatenate(ys).astype(np.int64)


def load_data(plan, data_dir=None):
    """`(train, val, test)` array pairs for `plan`: its dataset, sizes and validation split.

    Fashion-MNIST is read from its local IDX files (`data.load_fashion_mnist`);
    CIFAR-10 through `tfds.load` (a prepared copy in `data_dir` or tfds'
    default folder). The last `val_size` training examples (of the first
    `train_size + val_size`) are the validation set; the test set is the
    first `test_size` test examples.

    Raises:
      DataUnavailableError: for CIFAR-10 without a prepared tfds copy, saying what to do.
      ValueError: for a split too small for the plan.
    """
    from keras_lottery import data

    if plan.dataset == "fashion_mnist":
        (x, y), test = data.load_fashion_mnist(path=data_dir)
    else:
        (x, y), test = _arrays(plan.dataset, "train", data_dir), _arrays(plan.dataset, "test", data_dir)
    need = None if plan.train_size is None else plan.train_size + plan.val_size
    x, y = _subset((x, y), need)
    if len(x) <= plan.val_size:
        raise ValueError(f"{plan.dataset} has {len(x)} training examples, too few to hold out "
                         f"{plan.val_size} for validation.")
    train, val = (x[:-plan.val_size], y[:-plan.val_size]), (x[-plan.val_size:], y[-plan.val_size:])
    data.check_finite({"train": train[0], "val": val[0], "test": test[0]})
    return train, val, _subset(test, plan.test_size)


def _schedule(plan, series):
    """(peak rate, warm-up steps, LR drop steps, rewind point) of one series, budget-scaled."""
    lr = series.learning_rate or plan.learning_rate
    warmup = int(round(series.warmup_steps * plan.scale))
    boundaries = sorted({max(1, int(round(b * plan.scale))) for b in plan.lr_boundaries})
    rewind = f"{int(round(series.rewind_steps * plan.scale))}it"
    return lr, warmup, boundaries, rewind


def run(plan, out, data_dir=None, fresh=False, progress="none", verbose=True):
    """Trains every series of `plan` and writes the report, figure and summary to `out`.

    Each series is one `experiment.run_experiment` with `resume=plan.resume` (default True): a
    rerun continues an interrupted run from its last finished round and
    skips finished seeds and controls; `fresh=True` deletes the previous
    results first (only `OUTPUT_FILES`).

    Args:
      plan: from `resolve`.
      out: the results folder (created).
      data_dir: Fashion-MNIST IDX folder, or the tfds data folder for CIFAR-10.
      fresh: start over.
      progress: a `progress.RoundProgress` mode.
      verbose: log a line per finished run.

    Returns:
      The summary written to `out/summary.json`: plan, steps per round,
      per-series summaries (`report.summarize`), the comparison rows, seconds.

    Raises:
      ValueError: from `load_data`, or for a rerun whose checkpoints were
        made with other settings (pass fresh=True or another `out`).
    """
    from keras_lottery import data, experiment, models, report
    from keras_lottery.lr_schedule import WarmupStepDecay

    started = time.perf_counter()
    os.makedirs(out, exist_ok=True)
    if fresh:
        for name in report.remove_outputs(out, OUTPUT_FILES):
            logger.info("--fresh: removed %s", os.path.join(out, name))
    train, val, test = load_data(plan, data_dir)
    num_classes = int(max(train[1].max(), val[1].max(), test[1].max())) + 1
    steps_per_epoch = -(-len(train[0]) // plan.batch_size)
    epochs = max(1, math.ceil(plan.training_steps / steps_per_epoch))
    fingerprint = data.data_fingerprint(*train, *val, *test)
    build = models.MODELS[plan.model]
    summaries = {}
    for series in plan.series:
        lr, warmup, boundaries, rewind = _schedule(plan, series)

        def compile_model(model, lr=lr, warmup=warmup, boundaries=boundaries):
            rate = WarmupStepDecay(lr, warmup_steps=warmup, boundaries=boundaries, gamma=0.1) \
                if (warmup or boundaries) else lr
            models.compile_classifier(model, plan.optimizer, rate, run_eagerly=plan.run_eagerly)

        def build_model(seed):
            return build(input_shape=train[0].shape[1:], num_classes=num_classes, seed=seed,
                         **plan.model_kwargs)

        config = {"reproduce": plan.name, "plan": plan.get_config(), "series_name": series.name,
                  "data_sha256": fingerprint}
        settings = experiment.ExperimentSettings(
            rounds=plan.rounds, prune_rate=plan.prune_rate, epochs_per_round=epochs,
            batch_size=plan.batch_size, seeds=tuple(range(plan.seeds)), controls=series.controls,
            rewind=rewind, scope=plan.scope, layer_rates=plan.layer_rates or None,
            output_layer_rate=plan.output_layer_rate, eval_every=plan.eval_every,
            verbose=int(verbose), run_config=config, progress=progress, resume=plan.resume,
            title=f"{plan.name} on {plan.dataset} ({plan.budget} budget): {series.label}")
        if verbose:
            logger.info("%s / %s: %d rounds x %d epochs (%d steps) of %d examples, seeds %s",
                        plan.name, series.name, plan.rounds + 1, epochs, epochs * steps_per_epoch,
                        len(train[0]), list(settings.seeds))
        got = experiment.run_experiment(build_model, compile_model, train, val, test,
                                        os.path.join(out, "runs", series.name), settings)
        summaries[series.name] = got.get("ticket", [])
        for kind in series.controls:
            summaries[kind] = got.get(kind, [])
    rows = compare(plan, summaries)
    result = {"name": plan.name, "budget": plan.budget, "dataset": plan.dataset,
              "plan": plan.get_config(), "steps_per_round": epochs * steps_per_epoch,
              "epochs_per_round": epochs, "input_shape": list(train[0].shape[1:]),
              "examples": {"train": len(train[0]), "val": len(val[0]), "test": len(test[0])},
              "series": summaries, "comparison": rows, "seconds": time.perf_counter() - started}
    report.write_json(os.path.join(out, "summary.json"), result)
    report.write_csv(os.path.join(out, "comparison.csv"), rows)
    plot(plan, summaries, os.path.join(out, "figure.png"))
    report.atomic_write(os.path.join(out, "report.md"), format_report(plan, result))
    return result


# -- comparing with the paper ----------------------------------------------------


def _mean(row, metric):
    stats = row.get(metric) if row else None
    return None if not stats else stats["mean"]


def _nearest(rows, fraction):
    return min(rows, key=lambda r: abs(math.log(r["weights_remaining"]["mean"]) - math.log(fraction)))


def _accuracy_metric(rows):
    """Test accuracy at the early-stopping iteration where measured, else at the round's end."""
    return "early_stop_test_accuracy" if any("early_stop_test_accuracy" in r for r in rows) \
        else "test_accuracy"


def _measure(figure, summaries, reference):
    """(our value, where) for one `PaperFigure`; value None when the run cannot say."""
    rows = summaries.get(figure.series) or []
    if not rows:
        return None, "series not run"
    metric = _accuracy_metric(rows)
    dense = reference[0] if reference else None
    at = _nearest(rows, figure.weights_remaining) if figure.weights_remaining else None
    where = f"at {100 * at['weights_remaining']['mean']:.1f}%" if at else ""
    m = figure.measure
    if m == "dense_accuracy":
        return _scaled(_mean(dense, metric), 100), "round 0"
    if m == "dense_early_stop":
        return _mean(dense, "early_stop_iteration"), "round 0"
    if m == "accuracy_at":
        return _scaled(_mean(at, metric), 100), where
    if m == "early_stop_at":
        return _mean(at, "early_stop_iteration"), where
    if m == "best_speedup":
        base = _mean(dense, "early_stop_iteration")
        found = [(base / r["early_stop_iteration"]["mean"], r) for r in rows[1:]
                 if base and _mean(r, "early_stop_iteration")]
        if not found:
            return None, "no early-stopping iteration measured"
        best, row = max(found, key=lambda t: t[0])
        return best, f"at {100 * row['weights_remaining']['mean']:.1f}%"
    if m == "best_gain":
        base = _mean(dense, metric)
        found = [(100 * (r[metric]["mean"] - base), r) for r in rows[1:] if _mean(r, metric) is not None]
        if not found or base is None:
            return None, "no pruned round"
        best, row = max(found, key=lambda t: t[0])
        return best, f"at {100 * row['weights_remaining']['mean']:.1f}%"
    if m == "smallest_matching":
        base = _mean(dense, metric)
        matching = [r for r in rows if _mean(r, metric) is not None
                    and 100 * (r[metric]["mean"] - base) >= -MATCH_POINTS]
        if not matching:
            return None, "never matches"
        smallest = min(matching, key=lambda r: r["weights_remaining"]["mean"])
        note = " (the last round run: may match further down)" if smallest is rows[-1] else ""
        return 100 * smallest["weights_remaining"]["mean"], f"within {MATCH_POINTS} points of dense{note}"
    if m == "final_gap":
        base = _mean(dense, metric)
        gap = 100 * (_mean(at, metric) - base)
        verdict = "matching" if gap >= -MATCH_POINTS else "not matching"
        return gap, f"{verdict}, {where}"
    raise ValueError(f"Unknown measure {m!r} in a PaperFigure.")


def _scaled(value, factor):
    return None if value is None else factor * value


def compare(plan, summaries):
    """One row per `PaperFigure` of the plan's protocol: the paper's number next to ours.

    The dense reference is round 0 of the protocol's first series. Returns a
    list of dicts: what, series, paper, paper_text, unit, paper_dataset,
    source, ours, ours_where, our_dataset.
    """
    reference = summaries.get(plan.series[0].name) or []
    rows = []
    for fig in plan.protocol.paper:
        ours, where = _measure(fig, summaries, reference)
        paper_at = f" at {100 * fig.weights_remaining:.1f}%" if fig.weights_remaining else ""
        rows.append({"what": fig.label + paper_at, "series": fig.series, "paper": fig.value,
                     "paper_text": fig.text, "unit": fig.unit, "paper_dataset": fig.dataset,
                     "source": fig.source, "ours": ours, "ours_where": where,
                     "our_dataset": plan.dataset})
    return rows


def _show(value, unit):
    """A value with its unit: "5,900 it", "3.50x", "+1.23 points", "98.04%"."""
    if value is None:
        return "-"
    if unit == "steps":
        return f"{value:,.0f} it"
    if unit == "x":
        return f"{value:.2f}x"
    if unit == "points":
        return f"{value:+.2f} points"
    return f"{value:.2f}%"


def format_comparison_rows(rows):
    """The paper comparison as a text table (the paper's values labelled with their dataset)."""
    table = [["compared", "paper", "paper's data", "ours", "ours: where"]]
    for r in rows:
        paper = r["paper_text"] if r["paper"] is None else _show(r["paper"], r["unit"])
        table.append([r["what"], paper, r["paper_dataset"], _show(r["ours"], r["unit"]),
                      f"{r['ours_where']} ({r['our_dataset']})"])
    widths = [max(len(line[i]) for line in table) for i in range(len(table[0]))]
    text = ["  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in table]
    text.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(text)


def format_rounds(plan, summaries):
    """Per round: % weights, then each series' test accuracy (and early-stop iteration)."""
    columns = []
    for s in plan.series:
        columns.append(s.name)
        columns += list(s.controls)
    first = summaries[columns[0]]
    metric = _accuracy_metric(first)
    by = {c: {r["round"]: r for r in summaries.get(c, [])} for c in columns}
    n_seeds = max((r["n_seeds"] for rows in summaries.values() for r in rows), default=1)
    header = ["round", "% weights"]
    for c in columns:
        header += [f"{c} acc %", f"{c} ES it"] if metric == "early_stop_test_accuracy" else [f"{c} acc %"]
    lines = [header]
    for row in first:
        line = [str(row["round"]), f"{100 * row['weights_remaining']['mean']:.1f}"]
        for c in columns:
            other = by[c].get(row["round"])
            acc = _mean(other, metric)
            cell = "-" if acc is None else f"{100 * acc:.2f}"
            if acc is not None and n_seeds > 1:
                cell += f" ± {100 * other[metric]['std']:.2f}"
            line.append(cell)
            if metric == "early_stop_test_accuracy":
                es = _mean(other, "early_stop_iteration")
                line.append("-" if es is None else f"{es:.0f}")
        lines.append(line)
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    text = ["  ".join(c.rjust(w) for c, w in zip(line, widths)) for line in lines]
    text.insert(1, "  ".join("-" * w for w in widths))
    what = ("test accuracy at the early-stopping iteration (min validation loss) and that "
            "iteration" if metric == "early_stop_test_accuracy" else "test accuracy at the round's end")
    return "\n".join(text + [f"{what}; mean{' ± std' if n_seeds > 1 else ''} over {n_seeds} "
                             f"seed{'s' if n_seeds > 1 else ''}"])


def format_report(plan, result):
    """report.md: the protocol (with sources), what the budget changed, results, the comparison."""
    p = plan.protocol
    lines = [f"# reproduce {plan.name}: {p.title}", "",
             f"Budget `{plan.budget}`, dataset `{plan.dataset}`; {result['examples']['train']} training, "
             f"{result['examples']['val']} validation, {result['examples']['test']} test examples; "
             f"{result['steps_per_round']} steps per round ({result['epochs_per_round']} epochs); "
             f"{result['seconds']:.0f} s.", "", "## Protocol", "", "| setting | source |", "| --- | --- |"]
    lines += [f"| {k} | {v} |" for k, v in p.sources.items()]
    if plan.budget == "small":
        lines += ["", f"The small budget changes: {p.small_note}."]
    lines += ["", "Series as run (iteration counts after the budget's scaling):", ""]
    for s in plan.series:
        lr, warmup, boundaries, rewind = _schedule(plan, s)
        extra = ", controls " + " + ".join(s.controls) if s.controls else ""
        drops = f"x0.1 at {', '.join(map(str, boundaries))} it" if boundaries else "no drops"
        lines.append(f"- `{s.name}`: {s.label}; rewind to {rewind}, peak rate {lr:g}, warm-up "
                     f"{warmup} it, {drops}{extra}")
    lines += ["", "## Results", "", "```", format_rounds(plan, result["series"]), "```", "",
              "## Against the paper", "",
              "The paper's numbers are the paper's, on the dataset named; ours are on "
              f"{plan.dataset}.", "", "```", format_comparison_rows(result["comparison"]), "```", "",
              "Sources: " + "; ".join(sorted({r["source"] for r in result["comparison"]})) + ".",
              "", "Figure: figure.png; per-series reports: runs/<series>/ "
              "(`keras-lottery report runs/<series>` reprints each)."]
    return "\n".join(lines) + "\n"


def plot(plan, summaries, path):
    """figure.png: every series (and control) against % weights remaining (`report.plot_summary`)."""
    from keras_lottery import report

    combined = {}
    for s in plan.series:
        key = "ticket" if s.name == "ticket" else s.label
        combined[key] = summaries.get(s.name) or []
        for c in s.controls:
            combined[c] = summaries.get(c) or []
    combined = {k: v for k, v in combined.items() if v}
    return report.plot_summary(combined, path, title=f"reproduce {plan.name} on {plan.dataset} "
                               f"({plan.budget} budget)")
