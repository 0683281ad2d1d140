"""`--dataset=folder`: your own images, as `train/<class>/` and
`test/<class>/` folders (read by `keras_dml.data.folders`, listed as
keras's `image_dataset_from_directory` lists them)."""

from keras_dml.data import folders
from keras_dml.data.normalization import NORMALIZATIONS
from keras_dml.datasets import registry


def _load_folder(config):
    if config.data_dir is None:
        raise ValueError(
            "--dataset=folder needs --data_dir holding train/<class>/ and "
            "test/<class>/ image folders."
        )
    train = folders.read_image_folders(config.data_dir, "train")
    test = folders.read_image_folders(config.data_dir, "test")
    if config.smoke_test:
        train = train._replace(
            paths=train.paths[: 2 * config.batch_size],
            labels=train.labels[: 2 * config.batch_size],
        )
    size = tuple(config.image_size)
    mean, std = NORMALIZATIONS["imagenet"]

    def make_train(seed, epochs, initial_epoch, input_context=None):
        return folders.image_folder_dataset(
            paths=train.paths,
            labels=train.labels,
            image_size=size,
            batch_size=config.batch_size,
            mean=mean,
            std=std,
            augment=config.augment,
            shuffle=True,
            seed=seed,
            drop_remainder=True,
            epochs=epochs,
            initial_epoch=initial_epoch,
            input_context=input_context,
        )

    validation = folders.image_folder_dataset(
        paths=test.paths,
        labels=test.labels,
        image_size=size,
        batch_size=config.batch_size,
        mean=mean,
        std=std,
    )
    return registry.LoadedData(
        num_classes=len(train.class_names),
        image_shape=(*size, 3),
        num_train=len(train.paths),
        preprocessing="imagenet",
        train=make_train,
        validation=validation,
        evaluation=registry.Top1(validation),
        class_names=tuple(train.class_names),
    )


DATASET = registry.register(
    registry.Dataset(
        "folder",
        registry.Top1,
        {
            "peers": ("resnet20", "resnet20"),
            "epochs": 30,
            "batch_size": 32,
            "optimizer": "adam",
            "lr": 1e-3,
            "image_size": (64, 64),
        },
        registry.SMALL,
        _load_folder,
        "your images: --data_dir with train/<class>/ and test/<class>/",
    )
)
