"""MoCo v1 / v2 (facebookresearch/moco): `{'arch', 'state_dict', 'optimizer', ...}` with `module.encoder_q.*` (a
torchvision ResNet whose `fc` is the projection: one linear layer in v1, `fc.0` / `fc.2` with a ReLU between in
v2), `module.encoder_k.*` (the momentum key encoder) and `module.queue` / `module.queue_ptr`."""

from ..models.configuration_moco import MoCoConfig
from ..models.modeling_moco import MoCoForPreTraining
from .common import Conversion, StateDict, check_leftovers, load_weights, prefixed, state_dict_of, take
from .resnet import resnet_from_torchvision

SOURCE = "moco"


def convert(checkpoint: dict, path: str) -> Conversion:
    state_dict = state_dict_of(checkpoint, path)
    query, key = take(state_dict, "encoder_q."), take(state_dict, "encoder_k.")
    queue = state_dict.pop("queue", None)
    state_dict.pop("queue_ptr", None)
    check_leftovers(state_dict, path)
    has_key_encoder = bool(key)  # `_encoder` empties the dicts it reads
    if not query:
        raise ValueError(f"{path}: no 'module.encoder_q.*' keys: not a MoCo checkpoint")
    backbone, query_trunk, query_head = _encoder(query, path)
    v2 = "0.weight" in query_head
    config = MoCoConfig(
        backbone_config=backbone,
        projection_layers=2 if v2 else 1,
        projection_hidden_dim=int(query_head["0.weight"].shape[0]) if v2 else MoCoConfig().projection_hidden_dim,
        projection_dim=int(query_head["2.weight" if v2 else "weight"].shape[0]),
        temperature=0.2 if v2 else 0.07,
        queue_size=int(queue.shape[1]) if queue is not None else MoCoConfig().queue_size,
    )
    head = "" if v2 else "0."  # v1's single fc is projector.0
    weights = prefixed("moco.backbone.", query_trunk)
    weights.update(prefixed(f"projector.{head}", query_head))
    notes = [
        f"MoCo {'v2' if v2 else 'v1'}: `encoder_q`'s ResNet trunk maps one to one onto transformers' ResNet; its "
        f"`fc` is the projector ({'2-layer MLP' if v2 else 'one linear layer'}, temperature set to "
        f"{config.temperature}, the paper's).",
    ]
    if has_key_encoder:
        _, key_trunk, key_head = _encoder(key, path)
        weights.update(prefixed("key_encoder.encoder.backbone.", key_trunk))
        weights.update(prefixed(f"key_encoder.head.{head}", key_head))
        notes.append("`encoder_k` (the momentum key encoder) is the pre-training model's `key_encoder`.")
    else:
        notes.append("The checkpoint has no `encoder_k`: the key encoder starts as a copy of the query encoder.")
    notes.append(
        f"The queue of {config.queue_size} negative keys is training state outside hf_ssl's weights: a continued "
        "run starts it from random unit vectors, as MoCo does."
    )
    model = MoCoForPreTraining(config)
    load_weights(model, weights, () if has_key_encoder else ("key_encoder.",), path)
    if not has_key_encoder:
        model._after_init()
    return Conversion(
        model,
        SOURCE,
        f"MoCo {'v2' if v2 else 'v1'} (He et al., CVPR 2020; Chen et al., 2020)",
        "https://github.com/facebookresearch/moco",
        "cc-by-nc-4.0",
        "CC BY-NC 4.0, the licence facebookresearch/moco states for its code and released models: non-commercial "
        "use only (check the repository's LICENSE for a later change).",
        notes=notes,
    )


def _encoder(encoder: StateDict, path: str):
    """(ResNet config, trunk weights in transformers' names, the `fc` projection's weights) of one encoder."""
    backbone, trunk = resnet_from_torchvision(encoder, path)
    head = take(encoder, "fc.")
    check_leftovers(encoder, path)
    if not head:
        raise ValueError(f"{path}: the MoCo encoder has no 'fc' projection")
    return backbone, trunk, head
