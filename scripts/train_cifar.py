r"""Trains a cohort of mutually-learning peers on CIFAR-100 (the paper's setup).

python scripts/train_cifar.py --peers=resnet32,resnet32 \
    --data_dir=cifar-100-python.tar.gz --model_dir=/tmp/dml/resnet32_pair

The same as `scripts/train.py --dataset=cifar100`: paper defaults (200 epochs,
batch 64, SGD with Nesterov momentum 0.9, lr 0.1 divided by 10 at epochs 60,
120 and 180, weight decay 5e-4, pad/crop/flip); every flag of train.py.
"""

import _cli  # First: quiets TensorFlow's start-up before anything loads it.

_cli.quiet_tensorflow()

import train  # noqa: E402

if __name__ == "__main__":
    train.main_with({"dataset": "cifar100"})
