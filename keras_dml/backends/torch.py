"""PyTorch's runtime: one device (the GPU Keras's torch backend picks, if
there is one), deterministic algorithms on request, peers run through
`predict_on_batch` (without gradients).

torch itself is imported only where a run needs its runtime.
"""

from keras_dml.backends.base import Runtime


class TorchRuntime(Runtime):
    name = "torch"

    def has_gpu(self):
        import torch

        return torch.cuda.is_available()

    def make_deterministic(self):
        import torch

        torch.use_deterministic_algorithms(True)

    def versions(self):
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
        return {"torch": torch.__version__, "devices": [device]}


RUNTIME = TorchRuntime()
