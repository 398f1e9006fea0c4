"""SimCLR and BYOL released as a torchvision ResNet state dict. The official releases are not PyTorch (SimCLR:
TensorFlow, google-research/simclr; BYOL: JAX/Haiku, deepmind-research/byol): converted with a port to
torchvision's ResNet layout (e.g. tonylins/simclr-converter for SimCLR v1, whose `fc` is the linear-evaluation
head), bare or under `state_dict`, with or without `module.`. The trunk maps one to one; `fc` is left out."""

from ..models.registry import METHODS
from .common import Conversion, check_leftovers, load_weights, prefixed, state_dict_of, take
from .resnet import resnet_from_torchvision

_RELEASES = {
    "simclr": (
        "SimCLR (Chen et al., ICML 2020), a PyTorch port of the TensorFlow release",
        "https://github.com/google-research/simclr",
        "apache-2.0",
        "Apache 2.0, the licence of google-research/simclr and its released checkpoints.",
    ),
    "byol": (
        "BYOL (Grill et al., NeurIPS 2020), a PyTorch port of the JAX release",
        "https://github.com/google-deepmind/deepmind-research/tree/master/byol",
        "other",
        "deepmind-research's code is Apache 2.0; check the terms the BYOL README gives for its released checkpoints "
        "and those of the port you converted them with.",
    ),
}


def convert(checkpoint: dict, path: str, source: str) -> Conversion:
    state_dict = state_dict_of(checkpoint, path)
    backbone, trunk = resnet_from_torchvision(state_dict, path)
    fc = take(state_dict, "fc.")
    check_leftovers(state_dict, path)
    method = METHODS[source]
    model = method.pretraining_class(method.config_class(backbone_config=backbone))
    prefix = model.base_model_prefix
    heads = tuple(f"{name}." for name, _ in model.named_children() if name != prefix)
    load_weights(model, prefixed(f"{prefix}.backbone.", trunk), heads, path)
    model._after_init()  # a momentum target (BYOL's) starts as a copy of the converted online network
    title, url, license, license_note = _RELEASES[source]
    notes = [
        "The ResNet trunk (torchvision layout) maps one to one onto transformers' ResNet; the features are the "
        "official backbone's pooled features.",
        f"Not in the checkpoint, initialised: {', '.join(name.rstrip('.') for name in heads)} (the method's "
        "training heads).",
    ]
    if fc:
        notes.append(f"`fc` ({tuple(fc['weight'].shape)}, a classification head, not the method's) is left out.")
    return Conversion(model, source, title, url, license, license_note, normalize=source != "simclr", notes=notes)
