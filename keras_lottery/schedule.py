"""`IMPSchedule`: when and how much iterative magnitude pruning prunes.

A genuine tfmot `PruningSchedule`, so tfmot's wrappers accept it and a wrapped
model serializes. Unlike tfmot's stock schedules it never asks the wrapper to
prune inside the training graph (`should_prune` is always False, which costs
nothing per step); masks change only at round boundaries, on the host, in
`IMPCallback`. The schedule is the single source of truth for the sparsity of
every round and for the rewind point.
"""

import re

import tensorflow as tf
import tensorflow_model_optimization as tfmot

__all__ = ["IMPSchedule", "RewindPoint", "parse_rewind", "weights_remaining"]


def weights_remaining(prune_rate, round_index):
    """Fraction of weights that IMP keeps after `round_index` pruning rounds.

    Args:
        prune_rate: fraction of the surviving weights pruned per round, in (0, 1).
        round_index: number of pruning rounds done (0 is the dense network).

    Returns:
        (1 - prune_rate) ** round_index, a float in (0, 1].

    Example:
        >>> round(weights_remaining(0.2, 10), 4)
        0.1074
    """
    return float((1.0 - prune_rate) ** round_index)


class RewindPoint:
    """Where a round restarts: `"500it"` (iterations) or `"2ep"` (epochs).

    `"0it"` (or 0) is the original lottery ticket hypothesis (rewind to θ0).

    With `mode="lr"` (written `"lr"`, `"lr:500it"`, `"lr:2ep"`) only the
    learning-rate schedule is rewound (Renda et al., 2020): at a round's end
    the trained survivors are kept, the pruned weights are zeroed, the
    optimizer's state is reset and its step counter set back to k (the step
    every pruned round starts from), so the schedule replays from k. `"lr"`
    is k = 0: each round retrains with the whole schedule, as the paper
    recommends. See `IMPCallback` for the details.

    Args:
        value: a non-negative int.
        unit: "it" or "ep".
        mode: "weights" (the default: survivors are reset to θk) or "lr".
    """

    MODES = ("weights", "lr")

    def __init__(self, value, unit="it", mode="weights"):
        if unit not in ("it", "ep"):
            raise ValueError(f"Rewind unit must be 'it' or 'ep', got {unit!r}.")
        if int(value) != value or value < 0:
            raise ValueError(
                f"Rewind point must be a non-negative integer, got {value!r}."
            )
        if mode not in self.MODES:
            raise ValueError(
                f"Rewind mode must be one of {self.MODES}, got {mode!r} ('weights' "
                "resets the survivors to θk; 'lr' keeps the trained survivors and "
                "rewinds only the learning-rate schedule)."
            )
        self.value = int(value)
        self.unit = unit
        self.mode = mode

    @property
    def rewinds_weights(self):
        """False for learning-rate rewinding (the trained survivors are kept)."""
        return self.mode == "weights"

    def to_steps(self, steps_per_epoch):
        """The rewind point as an optimizer step count.

        Args:
            steps_per_epoch: batches per epoch (needed for `"Nep"` only).

        Raises:
            ValueError: for an epoch-based point when steps_per_epoch is unknown.
        """
        if self.unit == "it":
            return self.value
        if not steps_per_epoch:
            raise ValueError(
                f"Rewind point {self} is given in epochs, but the number of steps "
                "per epoch is unknown (a dataset of unknown length?). Pass "
                "`steps_per_epoch` to fit, or give the rewind point in iterations "
                "(e.g. '500it')."
            )
        return self.value * int(steps_per_epoch)

    def __str__(self):
        point = f"{self.value}{self.unit}"
        if self.mode == "lr":
            return "lr" if self.value == 0 else f"lr:{point}"
        return point

    def __repr__(self):
        return f"RewindPoint({str(self)!r})"

    def __eq__(self, other):
        return isinstance(other, RewindPoint) and (self.value, self.unit, self.mode) == (
            other.value,
            other.unit,
            other.mode,
        )

    def __hash__(self):
        return hash((self.value, self.unit, self.mode))


_REWIND_RE = re.compile(r"^\s*(\d+)\s*(it|ep)\s*$")
_LR_RE = re.compile(r"^\s*lr\s*(?::\s*(\d+)\s*(it|ep))?\s*$")


def parse_rewind(rewind):
    """Parses `"500it"`, `"2ep"`, `"0it"` or an int (iterations) into a `RewindPoint`.

    `"lr"`, `"lr:500it"` and `"lr:2ep"` are learning-rate rewinding (only the
    schedule is rewound, to step 0 or k; see `RewindPoint`).

    Raises:
        ValueError: for anything else, naming the accepted forms.
    """
    if isinstance(rewind, RewindPoint):
        return rewind
    if isinstance(rewind, bool):
        raise ValueError(f"Malformed rewind point {rewind!r}.")
    if isinstance(rewind, int):
        return RewindPoint(rewind, "it")
    if isinstance(rewind, str):
        match = _REWIND_RE.match(rewind)
        if match:
            return RewindPoint(int(match.group(1)), match.group(2))
        match = _LR_RE.match(rewind)
        if match:
            if match.group(1) is None:
                return RewindPoint(0, "it", mode="lr")
            return RewindPoint(int(match.group(1)), match.group(2), mode="lr")
    raise ValueError(
        f"Malformed rewind point {rewind!r}: use '<N>it' for N iterations "
        "(e.g. '500it'; '0it' rewinds to the initialization as in the original "
        "lottery ticket paper), '<N>ep' for N epochs (e.g. '2ep'), or 'lr' / "
        "'lr:<N>it' / 'lr:<N>ep' to keep the trained survivors and rewind only "
        "the learning-rate schedule (to step 0 or N)."
    )


class IMPSchedule(tfmot.sparsity.keras.PruningSchedule):
    """The pruning schedule of iterative magnitude pruning (IMP).

    Round 0 trains the dense network; each later round starts from a mask that
    keeps (1 - prune_rate) of the previous round's survivors. The target
    sparsity after round r is therefore 1 - (1 - prune_rate) ** r.

    tfmot calls the schedule inside the training graph to ask whether to prune
    at this step; the answer is always no, because IMP's masks are computed by
    `IMPCallback` on the host at round boundaries (which keeps the per-step cost
    of pruning at zero). The reported sparsity is that of the current round
    when `steps_per_round` is known.

    Args:
        rounds: number of pruning rounds after the dense round 0 (>= 1).
        prune_rate: fraction of the surviving weights pruned per round, in (0, 1).
        steps_per_round: training steps per round, if known (only used to report
            the current round's sparsity to tfmot).

    Raises:
        ValueError: for rounds < 1 or a prune_rate outside (0, 1).

    Example:
        >>> s = IMPSchedule(rounds=10, prune_rate=0.2)
        >>> round(s.sparsity(10), 3)
        0.893
    """

    def __init__(self, rounds, prune_rate, steps_per_round=None):
        if isinstance(rounds, bool) or int(rounds) != rounds or rounds < 1:
            raise ValueError(
                f"rounds must be an integer >= 1, got {rounds!r}. "
                "Round 0 trains the dense network; rounds=1 prunes once."
            )
        if not isinstance(prune_rate, (int, float)) or not 0.0 < prune_rate < 1.0:
            raise ValueError(
                f"prune_rate must be a fraction in (0, 1), got {prune_rate!r} "
                "(0.2 prunes 20% of the surviving weights each round)."
            )
        if steps_per_round is not None and steps_per_round < 1:
            raise ValueError(f"steps_per_round must be >= 1, got {steps_per_round!r}.")
        self.rounds = int(rounds)
        self.prune_rate = float(prune_rate)
        self.steps_per_round = (
            int(steps_per_round) if steps_per_round is not None else None
        )

    def weights_remaining(self, round_index):
        """Fraction of prunable weights kept after round `round_index`."""
        if not 0 <= round_index <= self.rounds:
            raise ValueError(
                f"round_index must be in [0, {self.rounds}], got {round_index!r}."
            )
        return weights_remaining(self.prune_rate, round_index)

    def sparsity(self, round_index):
        """Target sparsity (fraction of zeros) after round `round_index`."""
        return 1.0 - self.weights_remaining(round_index)

    def __call__(self, step):
        """tfmot's in-graph query: never prune here; report this round's sparsity."""
        if self.steps_per_round is None:
            sparsity = tf.constant(0.0, tf.float32)
        else:
            table = tf.constant(
                [self.sparsity(r) for r in range(self.rounds + 1)], tf.float32
            )
            round_index = tf.minimum(
                tf.cast(tf.maximum(step, 1) - 1, tf.int64) // self.steps_per_round,
                self.rounds,
            )
            sparsity = tf.gather(table, round_index)
        return tf.constant(False), sparsity

    def get_config(self):
        return {
            "class_name": self.__class__.__name__,
            "config": {
                "rounds": self.rounds,
                "prune_rate": self.prune_rate,
                "steps_per_round": self.steps_per_round,
            },
        }

    @classmethod
    def from_config(cls, config):
        if "config" in config:
            config = config["config"]
        return cls(**config)

    def __repr__(self):
        return (
            f"IMPSchedule(rounds={self.rounds}, prune_rate={self.prune_rate}, "
            f"steps_per_round={self.steps_per_round})"
        )
