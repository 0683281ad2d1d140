"""`--dataset=folder`: your own images, as `train/<class>/` and
`test/<class>/` folders (read by `keras_dml.data.folders`, listed as
keras's `image_dataset_from_directory` lists them)."""

from keras_dml.data import folders
from keras_dml.data.normalization import NORMALIZATIONS
from keras_dml.data.options import PipelineOptions
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

    def make_train(options):
        return folders.image_folder_batches(train.paths, train.labels, size, options)

    options = PipelineOptions(config.batch_size, mean, std)
    validation = folders.image_folder_batches(test.paths, test.labels, size, options)
    return registry.LoadedData(
        num_classes=len(train.class_names),
        image_shape=(*size, 3),
        num_train=len(train.paths),
        preprocessing="imagenet",
        train=make_train,
        train_options=options.replace(augment=config.augment),
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
        settings=(registry.IMAGE_SIZE,),
    )
)
