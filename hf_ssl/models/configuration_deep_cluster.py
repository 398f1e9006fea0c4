"""DeepCluster configuration."""

from huggingface_hub.dataclasses import strict

from .configuration_ssl import SSLConfig


@strict
class DeepClusterConfig(SSLConfig):
    r"""
    DeepCluster (Caron, Bojanowski, Joulin, Douze, ECCV 2018, "Deep Clustering for Unsupervised Learning of Visual
    Features"): at each epoch start, k-means on the PCA-whitened features of the whole training set gives
    pseudo-labels; the backbone and a freshly initialised linear classifier are then trained to predict them.
    Defaults are the paper's ImageNet settings (AlexNet with Sobel input is `backbone_config`'s business).

    Which layer is clustered: for AlexNet/VGG, fc7 *before* its ReLU (the official main.py drops the classifier's
    last ReLU before computing the features), in eval mode on centre crops; training feeds fc7 *after* the ReLU
    to the classifier. For other backbones, their pooled features. The classifier has a parameter group of its
    own (the official code gives the top layer its own SGD, re-created at each clustering).

    num_clusters (`int`, *optional*, defaults to 10000):
        k of the k-means clustering, and the output size of the classifier.
    pca_dim (`int`, *optional*, defaults to 256):
        Features are PCA-reduced to this size, whitened and L2-normalised before k-means.
    kmeans_iterations (`int`, *optional*, defaults to 20):
        Lloyd iterations of the clustering.
    uniform_sampling (`bool`, *optional*, defaults to `True`):
        Sample training examples uniformly over clusters rather than over examples (the paper's sampler), so
        that large clusters do not dominate.
    classifier_momentum (`float`, *optional*, defaults to 0.0):
        SGD / LARS momentum of the classifier's parameter group (the trunk uses the recipe's `momentum`). 0 is the
        official code's top-layer SGD without momentum; its state is also cleared at every clustering. `None`
        puts the classifier in the trunk's groups (needed with `optim: adamw`, which has no momentum).
    classifier_init_std (`float`, *optional*, defaults to 0.01):
        Standard deviation of the classifier's weights at each re-initialisation (bias zero).
    num_examples (`int`, *optional*, defaults to 0):
        Size of the training set (rows of the pseudo-label table). The training loop sets it; 0 builds a model
        for feature extraction only.
    """

    model_type = "deep_cluster"

    num_clusters: int = 10000
    pca_dim: int = 256
    kmeans_iterations: int = 20
    uniform_sampling: bool = True
    classifier_momentum: float | int | None = 0.0
    classifier_init_std: float | int = 0.01
    num_examples: int = 0

    def validate_method(self):
        """Hyper-parameters must be in range; the message names the field."""
        for name in ("num_clusters", "pca_dim", "kmeans_iterations"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.num_examples < 0:
            raise ValueError(f"num_examples must be >= 0, got {self.num_examples}")
        if self.num_examples and self.num_clusters > self.num_examples:
            raise ValueError(
                f"num_clusters={self.num_clusters} is larger than the training set (num_examples={self.num_examples})"
            )
        if self.classifier_momentum is not None and not 0 <= self.classifier_momentum < 1:
            raise ValueError(f"classifier_momentum must be in [0, 1) or null, got {self.classifier_momentum}")
        if not self.classifier_init_std > 0:
            raise ValueError(f"classifier_init_std must be > 0, got {self.classifier_init_std}")


__all__ = ["DeepClusterConfig"]
