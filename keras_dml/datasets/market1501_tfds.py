"""A TFDS builder for Market-1501 (manual download).

Importing this module registers the dataset name `market1501`:

```python
import keras_dml.datasets.market1501_tfds  # noqa: F401  (registers the builder)
import tensorflow_datasets as tfds

ds = tfds.load(
    "market1501",
    split="query",
    download_and_prepare_kwargs={
        "download_config": tfds.download.DownloadConfig(manual_dir="~/downloads")
    },
)
```
"""

import os

import numpy as np
import tensorflow_datasets as tfds

from keras_dml.datasets import market1501

_CITATION = """\
@inproceedings{zheng2015scalable,
  title={Scalable Person Re-identification: A Benchmark},
  author={Zheng, Liang and Shen, Liyue and Tian, Lu and Wang, Shengjin and
          Wang, Jingdong and Tian, Qi},
  booktitle={ICCV},
  year={2015}
}"""


class Market1501(tfds.core.GeneratorBasedBuilder):
    """Market-1501: 32,668 boxes of 1,501 people seen by 6 cameras.

    Splits: "train" (12,936 images, 751 ids, `label` in 0..750), "query"
    (3,368) and "gallery" (15,913 after dropping junk; distractors, person id
    0, kept). Outside "train", `label` is -1: ranking uses `person_id` and
    `camera_id`.
    """

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Train, query and gallery splits from the v15.09.15 zip."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = f"""\
    Market-1501 cannot be downloaded automatically. Get
    {market1501.DATASET_FOLDER}.zip from the dataset's page and place it (or the
    folder it extracts to) in the manual dir, by default
    ~/tensorflow_datasets/downloads/manual/.
    """

    def _info(self):
        return tfds.core.DatasetInfo(
            builder=self,
            description=self.__doc__,
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(
                        shape=(None, None, 3), encoding_format="jpeg"
                    ),
                    "label": tfds.features.Scalar(dtype=np.int64),
                    "person_id": tfds.features.Scalar(dtype=np.int64),
                    "camera_id": tfds.features.Scalar(dtype=np.int64),
                    "file_name": tfds.features.Text(),
                }
            ),
            supervised_keys=("image", "label"),
            citation=_CITATION,
        )

    def _split_generators(self, dl_manager):
        root = self._find_source(os.fspath(dl_manager.manual_dir))
        return {
            split: self._generate_examples(root, split)
            for split in ("train", "query", "gallery")
        }

    @staticmethod
    def _find_source(manual_dir):
        for name in (market1501.DATASET_FOLDER + ".zip", market1501.DATASET_FOLDER):
            candidate = os.path.join(manual_dir, name)
            if os.path.exists(candidate):
                return candidate
        raise AssertionError(
            f"{manual_dir} holds neither {market1501.DATASET_FOLDER}.zip nor "
            f"{market1501.DATASET_FOLDER}/. {Market1501.MANUAL_DOWNLOAD_INSTRUCTIONS}"
        )

    def _generate_examples(self, root, split):
        for (
            file_name,
            jpeg,
            person_id,
            camera_id,
            label,
        ) in market1501.iter_market1501_images(root, split):
            yield (
                file_name,
                {
                    "image": jpeg,
                    "label": label,
                    "person_id": person_id,
                    "camera_id": camera_id,
                    "file_name": file_name,
                },
            )
