"""Instability analysis, stability to pruning, and the search for a rewind point.

Frankle, Dziugaite, Roy & Carbin ("Linear Mode Connectivity and the Lottery
Ticket Hypothesis") call a network *stable* at step k when two copies trained
from θk with different SGD noise (here: data order) end in the same linearly
connected region: the error along the straight line between their final
weights does not rise above that of the endpoints. Instability is the error
barrier: the highest error on the path minus the mean of the endpoints'
errors. IMP finds matching tickets (by rewinding to θk) from about the first
k at which the subnetwork is stable.

Batch normalization: the moving statistics of an interpolated network are not
the interpolation of the endpoints' statistics (the activations change
non-linearly with the weights), so evaluating it with interpolated moving
statistics measures a broken network, not the loss landscape. By default each
point on the path gets its moving mean and variance recomputed from training
batches (`recompute_bn_statistics`: a cumulative average over the batches, in
training mode), as the papers' authors and later work do for BN networks.
Pass `bn_data=None` to switch that off (the two endpoints then keep their own
statistics, interior points the interpolation).

Everything here works on copies: the models passed in are never modified.

The package's modules, one concept each: `interpolation` (copies, the
interpolated network, BN statistics), `path` (loss and error along the path,
`PathResult`), `instability` (two copies from θk, `instability_analysis`),
`distance` (stability to pruning), `search` (the rewind-point search,
`earliest_stable`), `plots`. Use the names below (`kl.stability.<name>`),
not the modules.
"""

from keras_lottery._public import present_as_package
from keras_lottery.stability.distance import pruning_distance
from keras_lottery.stability.instability import InstabilityResult, instability_analysis, train_copy
from keras_lottery.stability.interpolation import copy_model, interpolate, recompute_bn_statistics
from keras_lottery.stability.path import DEFAULT_POINTS, PathResult, evaluate_path
from keras_lottery.stability.plots import plot_instability, plot_paths
from keras_lottery.stability.search import (
    DEFAULT_THRESHOLD,
    RewindSearchResult,
    earliest_stable,
    search_rewind_point,
)

__all__ = [
    "DEFAULT_POINTS",
    "DEFAULT_THRESHOLD",
    "InstabilityResult",
    "PathResult",
    "RewindSearchResult",
    "copy_model",
    "earliest_stable",
    "evaluate_path",
    "instability_analysis",
    "interpolate",
    "plot_instability",
    "plot_paths",
    "pruning_distance",
    "recompute_bn_statistics",
    "search_rewind_point",
    "train_copy",
]

# The public names are documented (docs/api.md) and pickled as keras_lottery.stability.*
present_as_package(globals())
