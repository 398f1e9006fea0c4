"""SwAV (facebookresearch/swav): a bare state dict (no wrapper) of its ResNet under DataParallel's `module.` (its
stem pads by 1 and convolves with padding 2: torchvision's padding 3), plus `projection_head.0/1/3` (Linear with
bias, BatchNorm1d, ReLU, Linear) and `prototypes` (a bias-free Linear)."""

from ..models.configuration_swav import SwAVConfig
from ..models.modeling_swav import SwAVForPreTraining
from .common import Conversion, check_leftovers, load_weights, prefixed, state_dict_of, take
from .resnet import resnet_from_torchvision

SOURCE = "swav"


def convert(checkpoint: dict, path: str) -> Conversion:
    state_dict = state_dict_of(checkpoint, path)
    backbone, trunk = resnet_from_torchvision(state_dict, path)
    head, prototypes = take(state_dict, "projection_head."), take(state_dict, "prototypes.")
    check_leftovers(state_dict, path)
    if set(prototypes) != {"weight"} or "0.weight" not in head or "3.weight" not in head:
        raise ValueError(
            f"{path}: expected SwAV's 'projection_head.0/1/3' MLP and one 'prototypes.weight' (several prototype "
            "heads are not supported)"
        )
    # hf_ssl's projector has no bias before its BatchNorm; in eval mode BN(Wx + b) equals BN'(Wx) with the running
    # mean moved by b (in training BatchNorm subtracts the batch mean, which removes b anyway)
    head["1.running_mean"] = head["1.running_mean"] - head.pop("0.bias")
    config = SwAVConfig(
        backbone_config=backbone,
        projection_hidden_dim=int(head["0.weight"].shape[0]),
        projection_dim=int(head["3.weight"].shape[0]),
        num_prototypes=int(prototypes["weight"].shape[0]),
    )
    weights = prefixed("swav.backbone.", trunk)
    weights.update(prefixed("projector.", head))
    weights["prototypes.weight"] = prototypes["weight"]
    model = SwAVForPreTraining(config)
    load_weights(model, weights, (), path)
    return Conversion(
        model,
        SOURCE,
        "SwAV (Caron et al., NeurIPS 2020)",
        "https://github.com/facebookresearch/swav",
        "cc-by-nc-4.0",
        "CC BY-NC 4.0, the licence of facebookresearch/swav and its released models: non-commercial use only.",
        notes=[
            "The ResNet trunk maps one to one onto transformers' ResNet (SwAV's extra 1-pixel pad plus padding 2 is "
            "torchvision's padding 3).",
            "`projection_head` is the projector: the bias of its first Linear is folded into the BatchNorm's running "
            "mean (hf_ssl's projector has no bias before BatchNorm; eval outputs are equal). `prototypes` map as is.",
            "The queue of past embeddings is not in the checkpoint (SwAV saves it apart): queue_size is 0; set it "
            "(and queue_start_epochs) to continue training with one.",
        ],
    )
