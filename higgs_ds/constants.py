"""Values shared by the data pipeline, the loss and the kernels."""

IGNORE_INDEX = -100  # label of a position that is not a target (PyTorch's cross-entropy convention)
