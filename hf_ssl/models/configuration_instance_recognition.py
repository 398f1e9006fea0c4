"""Instance Recognition (NPID) configuration."""

from huggingface_hub.dataclasses import strict

from .configuration_ssl import SSLConfig


@strict
class InstanceRecognitionConfig(SSLConfig):
    r"""
    Instance Recognition with a non-parametric softmax and a memory bank (Wu, Xiong, Yu, Lin, CVPR 2018,
    "Unsupervised Feature Learning via Non-Parametric Instance Discrimination"). Defaults are the paper's.

    embedding_dim (`int`, *optional*, defaults to 128):
        Size of the L2-normalised embedding (the paper's D).
    num_examples (`int`, *optional*, defaults to 0):
        Rows of the memory bank: the number of training examples. The training loop sets it from the dataset;
        0 builds a model without a bank (feature extraction only).
    num_negatives (`int`, *optional*, defaults to 4096):
        Noise samples per example drawn uniformly from the memory bank for the NCE loss (the paper's m). 0 means
        the exact non-parametric softmax over the whole bank instead (the paper's eq. 2, practical for small
        datasets; the official code's `--nce-k 0`).
    temperature (`float`, *optional*, defaults to 0.07):
        Temperature of the non-parametric softmax (the paper's tau).
    bank_momentum (`float`, *optional*, defaults to 0.5):
        Proximal update of the memory bank: v <- m * v + (1 - m) * f, then re-normalised.
    """

    model_type = "instance_recognition"

    embedding_dim: int = 128
    num_examples: int = 0
    num_negatives: int = 4096
    temperature: float | int = 0.07
    bank_momentum: float | int = 0.5

    def validate_method(self):
        """Hyper-parameters must be in range; the message names the field."""
        if self.embedding_dim < 1:
            raise ValueError(f"embedding_dim must be >= 1, got {self.embedding_dim}")
        if self.num_examples < 0:
            raise ValueError(f"num_examples must be >= 0, got {self.num_examples}")
        if self.num_negatives < 0:
            raise ValueError(f"num_negatives must be >= 0 (0 = exact softmax), got {self.num_negatives}")
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if not 0.0 <= self.bank_momentum < 1.0:
            raise ValueError(f"bank_momentum must be in [0, 1), got {self.bank_momentum}")


__all__ = ["InstanceRecognitionConfig"]
