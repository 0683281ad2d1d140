r"""Trains re-ID peers with DML on Market-1501 and evaluates them (CMC, mAP).

python scripts/train_market1501.py --data_dir=Market-1501-v15.09.15.zip \
    --model_dir=/tmp/dml_market --peers=reid_mobilenet,reid_mobilenet

The same as `scripts/train.py --dataset=market1501`: the official DML code's
defaults (MobileNet v1 peers from ImageNet weights, Adam lr 2e-4 with beta1
0.5, batch 16, label smoothing 0.1, images 256x128); every flag of train.py.
At the end every query ranks the gallery with each peer's features and the
ensemble's: rank-1/5/10/20, mAP (standard and official) and mINP, written to
reid_results.md / .json with cmc.png.
"""

import _cli  # First: quiets TensorFlow's start-up before anything loads it.

_cli.quiet_tensorflow()

import train  # noqa: E402

if __name__ == "__main__":
    train.main_with({"dataset": "market1501"})
