"""The cohort: `MutualLearningModel` and everything its training step needs.

- `mutual_learning`: the model (peers, the mimicry weight and its ramp, fit,
  evaluate, saving); `steps/`: how each backend takes and applies the
  gradients of one step (one file per backend).
- `mimicry`: what each peer is taught to match (DML's pairwise KL, the
  ensemble, KDCL, temporal means, ...); `losses`: the cohort's loss terms;
  `kl_ramp`: the mimicry weight's ramp-up and burn-in.
- `metrics`: the per-peer and ensemble metrics; `peer_optimizers`: one
  optimizer per peer; `labels`, `checked_batches`: label checks;
  `peer_calls`: a peer's logits and auxiliary outputs.
- `fit_callbacks`, `progress`: what `fit` adds for a cohort (callbacks on
  any logged name, a progress bar that fits the terminal);
  `keras_internals`: the few Keras internals the cohort reads, in one place.

Nothing here imports the rest of keras_dml: the runner, the datasets and the
export sit above it.
"""

from keras_dml.cohort import losses, mimicry
from keras_dml.cohort.mutual_learning import MutualLearningModel
from keras_dml.cohort.peer_optimizers import PeerOptimizers

__all__ = ["MutualLearningModel", "PeerOptimizers", "losses", "mimicry"]
