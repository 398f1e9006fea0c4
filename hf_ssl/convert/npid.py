"""Instance Recognition / NPID (zhirongw/lemniscate.pytorch): `{'arch', 'state_dict', 'lemniscate', ...}` whose
state dict is a torchvision ResNet under DataParallel's `module.` with `fc` the 128-d embedding (L2-normalised in
the forward). `lemniscate` (the memory bank) is a pickled `NCEAverage` object: save `state_dict` alone (README)."""

from ..models.configuration_instance_recognition import InstanceRecognitionConfig
from ..models.modeling_instance_recognition import InstanceRecognitionForPreTraining
from .common import Conversion, check_leftovers, load_weights, prefixed, state_dict_of, take
from .resnet import resnet_from_torchvision

SOURCE = "npid"


def convert(checkpoint: dict, path: str) -> Conversion:
    state_dict = state_dict_of(checkpoint, path)
    backbone, weights = resnet_from_torchvision(state_dict, path)
    fc = take(state_dict, "fc.")
    check_leftovers(state_dict, path)
    if "weight" not in fc:
        raise ValueError(f"{path}: no 'fc.weight' (NPID's embedding layer)")
    prefix = "instance_recognition."
    weights = prefixed(f"{prefix}backbone.", weights)
    weights.update(prefixed(f"{prefix}projection.", fc))
    config = InstanceRecognitionConfig(backbone_config=backbone, embedding_dim=int(fc["weight"].shape[0]))
    model = InstanceRecognitionForPreTraining(config)
    load_weights(model, weights, (), path)
    return Conversion(
        model,
        SOURCE,
        "Instance Recognition / NPID (Wu et al., CVPR 2018)",
        "https://github.com/zhirongw/lemniscate.pytorch",
        "other",
        "zhirongw/lemniscate.pytorch has no LICENSE file: the terms of its released models are not stated. Ask the "
        "authors before redistributing.",
        notes=[
            "The ResNet trunk maps one to one onto transformers' ResNet; `fc` is the projection to the "
            f"{config.embedding_dim}-d embedding, L2-normalised as in the official forward.",
            "The memory bank and the NCE normaliser Z are not in the official state dict (`lemniscate` is a pickled "
            "object, not read): they are training state, initialised when training continues (random unit rows, Z "
            "estimated on the first batch).",
        ],
    )
