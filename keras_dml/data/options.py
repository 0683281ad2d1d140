"""What every tf.data pipeline of keras_dml takes, as one value.

A split becomes batches the same way whatever holds its images (arrays,
image folders, Market-1501's zip): a batch size, the normalization, whether
to augment, the order (shuffle, seed), and for training the epochs to yield
and this process's slice of each global batch. `PipelineOptions` carries
them from a dataset's loader through its pipeline to the index batches; the
public functions (`array_dataset`, `image_folder_dataset`,
`market1501_dataset`) keep their keyword arguments and build one.
"""

import dataclasses


@dataclasses.dataclass(frozen=True)
class PipelineOptions:
    """How a split becomes batches.

    Attributes:
        batch_size: the global batch size (under a strategy, each replica
            takes its slice).
        mean, std: per-channel statistics of images scaled to [0, 1]; the
            batches are normalized with them.
        augment: random augmentation of each image, as the pipeline defines
            it (shifts and flips of arrays; flips and Random Erasing of
            image files).
        shuffle: a new permutation each epoch.
        seed: makes the order and augmentation of every epoch reproducible;
            None draws one (`keras_dml.data.epochs.resolve_seed`).
        drop_remainder: drop the last partial batch of each epoch.
        epochs: None for one epoch per iteration (Keras re-iterates it each
            epoch); an int for epochs `initial_epoch .. epochs-1` back to
            back, each a function of (seed, epoch) alone, for exact resume
            (pass `steps_per_epoch` to `fit`).
        initial_epoch: the first epoch when `epochs` is given.
        input_context: a `tf.distribute.InputContext`: keep this pipeline's
            slice of every global batch, batched per replica.
    """

    batch_size: int
    mean: tuple = (0.0,)
    std: tuple = (1.0,)
    augment: bool = False
    shuffle: bool = False
    seed: int | None = None
    drop_remainder: bool = False
    epochs: int | None = None
    initial_epoch: int = 0
    input_context: object = None

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)

    def for_training(self, seed, epochs, initial_epoch=0, input_context=None):
        """These options for a run's training epochs from `initial_epoch`
        on: shuffled, partial batches dropped, drawn from `seed`."""
        return self.replace(
            shuffle=True,
            drop_remainder=True,
            seed=seed,
            epochs=epochs,
            initial_epoch=initial_epoch,
            input_context=input_context,
        )
