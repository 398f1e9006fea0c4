"""DeepCluster (facebookresearch/deepcluster): `{'arch', 'state_dict', ...}` with `sobel.0/1` (the fixed grayscale
and Sobel convs), `features.module.N` (DataParallel around the conv trunk: conv, BatchNorm, ReLU, max-pool as in
its CFG['2012']), `classifier.1/4` (fc6, fc7) and `top_layer` (the last clustering's classifier). AlexNet only."""

import torch

from ..models.configuration_alexnet import AlexNetConfig
from ..models.configuration_deep_cluster import DeepClusterConfig
from ..models.layers import SobelFilter
from ..models.modeling_deep_cluster import DeepClusterForPreTraining
from .common import Conversion, StateDict, check_leftovers, load_weights, prefixed, state_dict_of, take

# indices in `features` of conv1 ... conv5 (each followed by its BatchNorm; ReLUs and max-pools hold no weights)
_CONV_INDICES = (0, 4, 8, 11, 14)
SOURCE = "deepcluster"


def convert(checkpoint: dict, path: str) -> Conversion:
    arch = checkpoint.get("arch", "alexnet")
    if arch != "alexnet":
        raise ValueError(f"{path}: arch={arch!r}; hf-ssl convert --from deepcluster converts the AlexNet model only")
    state_dict = state_dict_of(checkpoint, path)
    _check_sobel(take(state_dict, "sobel."), path)
    features, classifier = take(state_dict, "features."), take(state_dict, "classifier.")
    top_layer = take(state_dict, "top_layer.")
    check_leftovers(state_dict, path)

    conv_channels = [int(features[f"{i}.weight"].shape[0]) for i in _CONV_INDICES]
    backbone = AlexNetConfig(conv_channels=conv_channels, fc_dim=int(classifier["4.weight"].shape[0]), sobel=True)
    weights: StateDict = {}
    prefix = "deep_cluster.backbone."
    # features.N -> blocks.<block>.convolution / .normalization
    places = {str(index): f"{block}.convolution" for block, index in enumerate(_CONV_INDICES)}
    places.update({str(index + 1): f"{block}.normalization" for block, index in enumerate(_CONV_INDICES)})
    for name, value in features.items():
        layer, rest = name.split(".", 1)
        if layer not in places:
            raise ValueError(f"{path}: unknown key 'features.module.{name}' (not DeepCluster's AlexNet layout)")
        weights[f"{prefix}blocks.{places[layer]}.{rest}"] = value
    weights.update(prefixed(f"{prefix}classifier.", classifier))
    weights.update(prefixed(f"{prefix}sobel.", SobelFilter().state_dict()))
    notes = [
        "The AlexNet trunk with its fixed Sobel input (`sobel.0/1`, checked equal to hf_ssl's kernels), conv1-5 "
        "with BatchNorm (`features.module.N`) and fc6/fc7 (`classifier.1/4`) map one to one.",
    ]
    num_clusters = int(top_layer["weight"].shape[0]) if top_layer else DeepClusterConfig().num_clusters
    if top_layer:
        weights.update(prefixed("classifier.", top_layer))
        notes.append(
            f"`top_layer` (the classifier over the last clustering's {num_clusters} clusters) is the pre-training "
            "model's `classifier`; the pseudo-labels are training state, recomputed at the next epoch start."
        )
    else:
        notes.append(f"The checkpoint has no `top_layer`: the classifier over {num_clusters} clusters is initialised.")
    model = DeepClusterForPreTraining(DeepClusterConfig(backbone_config=backbone, num_clusters=num_clusters))
    load_weights(model, weights, () if top_layer else ("classifier.",), path)
    return Conversion(
        model,
        SOURCE,
        "DeepCluster AlexNet (Caron et al., ECCV 2018)",
        "https://github.com/facebookresearch/deepcluster",
        "cc-by-nc-4.0",
        "CC BY-NC 4.0, the licence of facebookresearch/deepcluster and its released models: non-commercial use only.",
        notes=notes,
    )


def _check_sobel(sobel: StateDict, path: str) -> None:
    """The official Sobel convs are fixed (never trained): refuse a checkpoint whose kernels differ from hf_ssl's."""
    grayscale, kernels = SobelFilter.reference_kernels()
    expected = {"0.weight": grayscale, "0.bias": torch.zeros(1), "1.weight": kernels, "1.bias": torch.zeros(2)}
    for name, value in expected.items():
        if name not in sobel or sobel[name].shape != value.shape or not torch.allclose(sobel[name].float(), value):
            raise ValueError(f"{path}: sobel.{name} is missing or not DeepCluster's fixed Sobel filter")
