"""Local Aggregation configuration."""

from huggingface_hub.dataclasses import strict

from .configuration_instance_recognition import InstanceRecognitionConfig


@strict
class LocalAggregationConfig(InstanceRecognitionConfig):
    r"""
    Local Aggregation (Zhuang, Zhai, Yamins, ICCV 2019, "Local Aggregation for Unsupervised Learning of Visual
    Embeddings"). The embedding, memory bank and temperature are Instance Recognition's (the inherited fields,
    also used for the Instance Recognition warm start); the fields below define the LA loss
    -log(P(C_i ∩ B_i | v_i) / P(B_i | v_i)). Defaults are the paper's ImageNet settings.

    background_neighbors (`int`, *optional*, defaults to 4096):
        B_i: the `background_neighbors` memory-bank entries nearest to the current embedding v_i.
    num_clusterings (`int`, *optional*, defaults to 10):
        H: independent k-means clusterings of the memory bank, recomputed at the start of every epoch. C_i is
        every example sharing a cluster with i in any of them.
    num_clusters (`int`, *optional*, defaults to 30000):
        k of each k-means clustering.
    kmeans_iterations (`int`, *optional*, defaults to 20):
        Lloyd iterations of each clustering.
    instance_recognition_epochs (`int`, *optional*, defaults to 10):
        Warm start: epochs trained with the Instance Recognition loss before the first clustering.
    """

    model_type = "local_aggregation"

    background_neighbors: int = 4096
    num_clusterings: int = 10
    num_clusters: int = 30000
    kmeans_iterations: int = 20
    instance_recognition_epochs: int = 10

    def validate_method(self):
        """Hyper-parameters must be in range; the message names the field."""
        super().validate_method()
        for name in ("background_neighbors", "num_clusterings", "num_clusters", "kmeans_iterations"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.instance_recognition_epochs < 0:
            raise ValueError(f"instance_recognition_epochs must be >= 0, got {self.instance_recognition_epochs}")
        if self.num_examples and self.num_clusters > self.num_examples:
            raise ValueError(
                f"num_clusters={self.num_clusters} is larger than the training set (num_examples={self.num_examples})"
            )


__all__ = ["LocalAggregationConfig"]
