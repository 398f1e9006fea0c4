"""C3D trained on Sports-1M (Tran et al., ICCV 2015), in the layout of the commonly used PyTorch port
(DavideA/c3d-pytorch, `c3d.pickle`): `conv1`, `conv2`, `conv3a/b`, `conv4a/b`, `conv5a/b`, `fc6`, `fc7`, `fc8`
(487 classes). Its pool5 pads height and width by 1 (a 16x112x112 clip ends 512x1x4x4, fc6's 8192 inputs); it reads
raw 0-255 RGB frames."""

from ..models.configuration_c3d import C3DConfig
from ..models.modeling_c3d import C3DModel
from .common import Conversion, check_leftovers, load_weights, prefixed, state_dict_of, take

SOURCE = "c3d"
_CONVS = ("conv1", "conv2", "conv3a", "conv3b", "conv4a", "conv4b", "conv5a", "conv5b")
_STAGES = ((0, 0), (1, 0), (2, 0), (2, 2), (3, 0), (3, 2), (4, 0), (4, 2))  # (stage, index in its layers)


def convert(checkpoint: dict, path: str) -> Conversion:
    state_dict = state_dict_of(checkpoint, path)
    weights = {}
    for conv, (stage, index) in zip(_CONVS, _STAGES):
        tensors = take(state_dict, f"{conv}.")
        if "weight" not in tensors:
            raise ValueError(f"{path}: no '{conv}.weight': not the C3D (c3d.pickle) layout")
        weights.update(prefixed(f"stages.{stage}.layers.{index}.", tensors))
    fc6, fc7, fc8 = take(state_dict, "fc6."), take(state_dict, "fc7."), take(state_dict, "fc8.")
    check_leftovers(state_dict, path)
    weights.update(prefixed("classifier.0.", fc6))
    weights.update(prefixed("classifier.3.", fc7))
    channels = [int(weights[f"stages.{s}.layers.{i}.weight"].shape[0]) for s, i in _STAGES]
    config = C3DConfig(conv_channels=channels, fc_dim=int(fc7["weight"].shape[0]), pool5_padding=(0, 1, 1))
    model = C3DModel(config)
    load_weights(model, weights, (), path)
    notes = [
        "conv1 ... conv5b and fc6 / fc7 map one to one onto hf_ssl's C3D backbone (no method: C3D is trained "
        "supervised); `pool5_padding=(0, 1, 1)` reproduces the model's pool5. `pooler_output` is fc7 after its ReLU; "
        "`hidden_states` the conv activations.",
        "Input: 16-frame clips of raw 0-255 RGB at 112x112 (the port's preprocessing: no rescaling, no mean).",
    ]
    if fc8:
        notes.append(f"`fc8` (the {fc8['weight'].shape[0]} Sports-1M classes) is left out: it is not a feature layer.")
    return Conversion(
        model,
        SOURCE,
        "C3D, Sports-1M (Tran et al., ICCV 2015)",
        "https://github.com/DavideA/c3d-pytorch",
        "other",
        "The PyTorch port (DavideA/c3d-pytorch) is MIT; the weights are Tran et al.'s Sports-1M model "
        "(facebookarchive/C3D): check its terms before redistributing.",
        image_size=112,
        resize_size=112,
        normalize=False,
        rescale=False,
        num_frames=16,
        notes=notes,
    )
