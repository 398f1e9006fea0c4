"""Tests of the AlexNet, VGG, C3D and R3D backbones: the output contract the methods and probes rely on, checkpoint
round trips through the Auto classes, the fixed Sobel filter, input/config validation and the full-size
architectures (built on the meta device, so they cost nothing)."""

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from transformers import AutoModel, PreTrainedConfig, PreTrainedModel
from transformers.modeling_outputs import BaseModelOutputWithPooling

import hf_ssl  # noqa: F401  (registers the backbones with the Auto classes)
from hf_ssl.models import (
    AlexNetConfig,
    AlexNetModel,
    C3DConfig,
    C3DModel,
    R3DConfig,
    R3DModel,
    VGGConfig,
    VGGModel,
)

BATCH = 2

# DeepCluster's fixed kernels, written out independently of hf_ssl.models.layers.
SOBEL_X = [[1.0, 0.0, -1.0], [2.0, 0.0, -2.0], [1.0, 0.0, -1.0]]
SOBEL_Y = [[1.0, 2.0, 1.0], [0.0, 0.0, 0.0], [-1.0, -2.0, -1.0]]


@dataclass
class Case:
    """A tiny backbone, its input and the shapes it must produce."""

    name: str
    model_class: type[PreTrainedModel]
    config: PreTrainedConfig
    input_shape: tuple[int, ...]
    hidden_shapes: list[tuple[int, ...]]
    last_hidden_shape: tuple[int, ...]
    hidden_size: int


def make_cases() -> list[Case]:
    """Fresh configs per test (configs are mutable). Widths are 1/32 of the originals, so each model has 5k-35k
    parameters; shapes are worked out by hand from the paper layouts."""
    return [
        # AlexNet, 32 px: conv1 (k11 s4 p2) -> 7, pool -> 3, conv2 -> 3, pool -> 1, conv3-5 -> 1, pool -> 1.
        Case(
            "alexnet",
            AlexNetModel,
            AlexNetConfig(width_multiplier=1 / 32, fc_dim=256),
            (BATCH, 3, 32, 32),
            [(BATCH, 3, 7, 7), (BATCH, 8, 3, 3), (BATCH, 12, 1, 1), (BATCH, 12, 1, 1), (BATCH, 8, 1, 1)],
            (BATCH, 8, 1, 1),
            8,
        ),
        # Without Sobel at 64 px: 15 -> 7 -> 7 -> 3 -> 3 -> 1.
        Case(
            "alexnet_rgb",
            AlexNetModel,
            AlexNetConfig(width_multiplier=1 / 32, fc_dim=256, sobel=False, pool_size=2),
            (BATCH, 3, 64, 64),
            [(BATCH, 3, 15, 15), (BATCH, 8, 7, 7), (BATCH, 12, 3, 3), (BATCH, 12, 3, 3), (BATCH, 8, 3, 3)],
            (BATCH, 8, 1, 1),
            8,
        ),
        Case(
            "vgg",
            VGGModel,
            VGGConfig(width_multiplier=1 / 32, fc_dim=256, pool_size=2),
            (BATCH, 3, 32, 32),
            [(BATCH, 2, 32, 32), (BATCH, 4, 16, 16), (BATCH, 8, 8, 8), (BATCH, 16, 4, 4), (BATCH, 16, 2, 2)],
            (BATCH, 16, 1, 1),
            8,
        ),
        # C3D, 4 frames of 32 px: pool1 keeps time, later pools halve it with ceil_mode (4 -> 2 -> 1 -> 1 -> 1).
        Case(
            "c3d",
            C3DModel,
            C3DConfig(width_multiplier=1 / 32, fc_dim=256, pool_size=(1, 2, 2)),
            (BATCH, 4, 3, 32, 32),
            [
                (BATCH, 2, 4, 32, 32),
                (BATCH, 4, 4, 16, 16),
                (BATCH, 8, 2, 8, 8),
                (BATCH, 16, 1, 4, 4),
                (BATCH, 16, 1, 2, 2),
            ],
            (BATCH, 16, 1, 1, 1),
            8,
        ),
        Case(
            "c3d_bn",
            C3DModel,
            C3DConfig(width_multiplier=1 / 32, fc_dim=256, batch_norm=True),
            (BATCH, 2, 3, 16, 16),
            [
                (BATCH, 2, 2, 16, 16),
                (BATCH, 4, 2, 8, 8),
                (BATCH, 8, 1, 4, 4),
                (BATCH, 16, 1, 2, 2),
                (BATCH, 16, 1, 1, 1),
            ],
            (BATCH, 16, 1, 1, 1),
            8,
        ),
        # R3D, 4 frames of 16 px: the stem halves H and W only, stages 2-4 halve T, H and W (T: 4 -> 2 -> 1 -> 1).
        Case(
            "r3d",
            R3DModel,
            R3DConfig(width_multiplier=1 / 32),
            (BATCH, 4, 3, 16, 16),
            [
                (BATCH, 2, 4, 8, 8),
                (BATCH, 2, 4, 8, 8),
                (BATCH, 4, 2, 4, 4),
                (BATCH, 8, 1, 2, 2),
                (BATCH, 16, 1, 1, 1),
            ],
            (BATCH, 16, 1, 1, 1),
            16,
        ),
    ]


CASE_NAMES = [case.name for case in make_cases()]


@pytest.fixture(params=CASE_NAMES)
def case(request: pytest.FixtureRequest) -> Case:
    """One tiny backbone case per parametrisation."""
    return next(case for case in make_cases() if case.name == request.param)


def build(case: Case) -> PreTrainedModel:
    """Seeded tiny model in eval mode."""
    torch.manual_seed(0)
    return case.model_class(case.config).eval()


def inputs(case: Case) -> torch.Tensor:
    """Seeded input batch for the case."""
    return torch.randn(case.input_shape, generator=torch.Generator().manual_seed(1))


def test_outputs_follow_the_contract(case: Case) -> None:
    model = build(case)
    outputs = model(inputs(case), output_hidden_states=True)

    assert isinstance(outputs, BaseModelOutputWithPooling)
    assert outputs.last_hidden_state.shape == case.last_hidden_shape
    assert case.config.hidden_size == case.hidden_size
    assert outputs.pooler_output.shape == (BATCH, case.hidden_size)
    assert [tuple(h.shape) for h in outputs.hidden_states] == case.hidden_shapes


def test_hidden_states_and_return_dict_default_to_config(case: Case) -> None:
    model = build(case)
    pixel_values = inputs(case)
    assert model(pixel_values).hidden_states is None

    model.config.output_hidden_states = True
    model.config.return_dict = False
    last_hidden_state, pooled, hidden_states = model(pixel_values)
    reference = model(pixel_values, return_dict=True)
    assert torch.equal(last_hidden_state, reference.last_hidden_state)
    assert torch.equal(pooled, reference.pooler_output)
    assert len(hidden_states) == len(case.hidden_shapes)


def test_tiny_models_are_tiny(case: Case) -> None:
    n_params = sum(p.numel() for p in build(case).parameters())
    assert 1_000 < n_params < 50_000, n_params


def test_save_and_auto_load_round_trip_is_bit_exact(case: Case, tmp_path: Path) -> None:
    model = build(case)
    # A training step moves the batch-norm running statistics away from their init, so the round trip must
    # carry buffers too, not just parameters.
    model.train()
    model(inputs(case) * 3 + 1)
    model.eval()
    model.save_pretrained(tmp_path)

    saved = sorted(path.name for path in tmp_path.iterdir())
    assert "model.safetensors" in saved
    assert not [name for name in saved if name.endswith((".bin", ".pt", ".pth", ".pkl", ".pickle"))]

    loaded = AutoModel.from_pretrained(tmp_path)
    assert type(loaded) is case.model_class
    assert loaded.config.to_dict() == model.config.to_dict() | {"_name_or_path": str(tmp_path)}
    assert not loaded.training

    original_state, loaded_state = model.state_dict(), loaded.state_dict()
    assert original_state.keys() == loaded_state.keys()
    for key, value in original_state.items():
        assert torch.equal(value, loaded_state[key]), key

    pixel_values = inputs(case)
    expected = model(pixel_values, output_hidden_states=True)
    actual = loaded(pixel_values, output_hidden_states=True)
    assert torch.equal(expected.pooler_output, actual.pooler_output)
    assert torch.equal(expected.last_hidden_state, actual.last_hidden_state)
    for expected_hidden, actual_hidden in zip(expected.hidden_states, actual.hidden_states, strict=True):
        assert torch.equal(expected_hidden, actual_hidden)


def test_backward_reaches_every_trainable_parameter(case: Case) -> None:
    model = build(case).train()
    outputs = model(inputs(case), output_hidden_states=True)
    loss = outputs.pooler_output.pow(2).sum() + sum(hidden.mean() for hidden in outputs.hidden_states)
    loss.backward()

    trainable = {name: p for name, p in model.named_parameters() if p.requires_grad}
    assert trainable
    missing = [name for name, p in trainable.items() if p.grad is None]
    assert not missing, missing
    assert all(torch.isfinite(p.grad).all() for p in trainable.values())
    assert sum(p.grad.abs().sum() for p in trainable.values()) > 0


def test_wrong_rank_or_channels_is_a_clear_error(case: Case) -> None:
    model = build(case)
    pixel_values = inputs(case)
    video = pixel_values.dim() == 5
    expected = r"\(batch_size, num_frames, 3, height, width\)" if video else r"\(batch_size, 3, height, width\)"

    with pytest.raises(ValueError, match=expected):
        model(pixel_values[0])
    with pytest.raises(ValueError, match=expected):
        model(pixel_values.unsqueeze(0))
    wrong_channels = pixel_values[:, :, :2] if video else pixel_values[:, :2]
    with pytest.raises(ValueError, match=expected):
        model(wrong_channels)


def test_videos_in_channels_first_layout_are_rejected() -> None:
    model = C3DModel(C3DConfig(width_multiplier=1 / 32, fc_dim=64))
    with pytest.raises(ValueError, match="num_frames"):
        model(torch.randn(1, 3, 4, 16, 16))  # (B, C, T, H, W) instead of VideoMAE's (B, T, C, H, W)


@pytest.mark.parametrize("model_class", [AlexNetModel, VGGModel])
def test_sobel_filter_is_fixed_saved_and_correct(model_class: type[PreTrainedModel], tmp_path: Path) -> None:
    config_class = model_class.config_class
    model = model_class(config_class(width_multiplier=1 / 32, fc_dim=64, pool_size=1))
    expected_sobel = torch.tensor([[SOBEL_X], [SOBEL_Y]])
    expected_gray = torch.full((1, 3, 1, 1), 1.0 / 3.0)

    assert torch.equal(model.sobel.sobel_weight, expected_sobel)
    assert torch.equal(model.sobel.grayscale_weight, expected_gray)
    assert not model.sobel.sobel_weight.requires_grad and not model.sobel.grayscale_weight.requires_grad
    assert not [name for name, _ in model.named_parameters() if "sobel" in name]
    assert {"sobel.sobel_weight", "sobel.grayscale_weight"} <= set(model.state_dict())
    # Re-running the initialisation (as from_pretrained does for anything missing) must restore, not randomise.
    model._init_weights(model.sobel)
    assert torch.equal(model.sobel.sobel_weight, expected_sobel)

    model.save_pretrained(tmp_path)
    loaded = AutoModel.from_pretrained(tmp_path)
    assert torch.equal(loaded.sobel.sobel_weight, expected_sobel)
    assert torch.equal(loaded.sobel.grayscale_weight, expected_gray)
    assert not loaded.sobel.sobel_weight.requires_grad

    # Red channel = 3 * column index, so the grayscale (channel mean) image is a ramp of slope 1 along x: the
    # x-gradient away from the border is (1 + 2 + 1) * (left - right) = -8 and the y-gradient is 0.
    ramp = torch.zeros(1, 3, 6, 6)
    ramp[:, 0] = 3 * torch.arange(6.0)
    gradients = loaded.sobel(ramp)
    assert gradients.shape == (1, 2, 6, 6)
    torch.testing.assert_close(gradients[0, 0, 1:-1, 1:-1], torch.full((4, 4), -8.0))
    torch.testing.assert_close(gradients[0, 1, 1:-1, 1:-1], torch.zeros(4, 4))


def test_sobel_off_feeds_the_image_to_conv1() -> None:
    with_sobel = AlexNetModel(AlexNetConfig(width_multiplier=1 / 32, fc_dim=64))
    without = AlexNetModel(AlexNetConfig(width_multiplier=1 / 32, fc_dim=64, sobel=False))
    assert with_sobel.blocks[0].convolution.in_channels == 2
    assert without.blocks[0].convolution.in_channels == 3
    assert without.sobel is None
    assert not [name for name in without.state_dict() if "sobel" in name]


@pytest.mark.parametrize("config_class", [AlexNetConfig, VGGConfig, C3DConfig, R3DConfig])
@pytest.mark.parametrize("value", [0, -0.5, float("nan")])
def test_width_multiplier_must_be_positive(config_class: type[PreTrainedConfig], value: float) -> None:
    with pytest.raises(ValueError, match="width_multiplier"):
        config_class(width_multiplier=value)


@pytest.mark.parametrize(
    ("config_class", "kwargs", "field"),
    [
        (AlexNetConfig, {"conv_channels": [96, 256, 384, 256]}, "conv_channels"),
        (AlexNetConfig, {"fc_dim": 0}, "fc_dim"),
        (AlexNetConfig, {"dropout_prob": 1.0}, "dropout_prob"),
        (AlexNetConfig, {"num_channels": 1}, "num_channels"),
        (VGGConfig, {"conv_channels": [[64, 64], []]}, r"conv_channels\[1\]"),
        (VGGConfig, {"pool_size": 0}, "pool_size"),
        (C3DConfig, {"pool_size": (1, 4)}, "pool_size"),
        (C3DConfig, {"conv_channels": [64, 128, 256, 256, 512, 512, 512]}, "conv_channels"),
        (R3DConfig, {"depths": [2, 2, 2]}, "depths"),
        (R3DConfig, {"hidden_sizes": [64, 0, 256, 512]}, "hidden_sizes"),
    ],
)
def test_invalid_config_names_the_field(config_class: type[PreTrainedConfig], kwargs: dict, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        config_class(**kwargs)


def test_width_multiplier_scales_convs_and_fcs() -> None:
    config = AlexNetConfig(width_multiplier=0.5, fc_dim=100)
    model = AlexNetModel(config)
    assert [block.convolution.out_channels for block in model.blocks] == [48, 128, 192, 192, 128]
    assert config.hidden_size == 50 == model.classifier[-2].out_features
    # Rounding never reaches zero channels.
    assert AlexNetConfig(width_multiplier=1e-6).hidden_size == 1


def conv_params(c_in: int, c_out: int, kernel_volume: int, bias: bool) -> int:
    """Parameter count of a conv layer."""
    return c_in * c_out * kernel_volume + (c_out if bias else 0)


def batch_norm_params(channels: int) -> int:
    """Parameter count of a batch norm layer (weight and bias)."""
    return 2 * channels


def test_full_c3d_matches_the_paper() -> None:
    with torch.device("meta"):
        model = C3DModel(C3DConfig())
        outputs = model(torch.empty(1, 16, 3, 112, 112), output_hidden_states=True)

    widths = [3, 64, 128, 256, 256, 512, 512, 512, 512]
    conv = sum(conv_params(c_in, c_out, 27, bias=True) for c_in, c_out in zip(widths, widths[1:]))
    fc6 = 512 * 1 * 4 * 4 * 4096 + 4096
    fc7 = 4096 * 4096 + 4096
    assert sum(p.numel() for p in model.parameters()) == conv + fc6 + fc7 == 77_995_776
    assert model.classifier[0].in_features == 8192
    # Paper geometry: pool5 turns conv5b's 2x7x7 map into 1x4x4 (pool5 pads in the original Caffe model).
    assert [tuple(h.shape) for h in outputs.hidden_states] == [
        (1, 64, 16, 112, 112),
        (1, 128, 16, 56, 56),
        (1, 256, 8, 28, 28),
        (1, 512, 4, 14, 14),
        (1, 512, 2, 7, 7),
    ]
    assert outputs.last_hidden_state.shape == (1, 512, 1, 4, 4)
    assert outputs.pooler_output.shape == (1, 4096)


def test_full_r3d_18_matches_torchvision() -> None:
    with torch.device("meta"):
        model = R3DModel(R3DConfig())
        outputs = model(torch.empty(1, 16, 3, 112, 112), output_hidden_states=True)

    expected = conv_params(3, 64, 3 * 7 * 7, bias=False) + batch_norm_params(64)
    c_in = 64
    for c_out, stride in zip([64, 128, 256, 512], [1, 2, 2, 2]):
        for block in range(2):
            block_in = c_in if block == 0 else c_out
            expected += conv_params(block_in, c_out, 27, bias=False) + batch_norm_params(c_out)
            expected += conv_params(c_out, c_out, 27, bias=False) + batch_norm_params(c_out)
            if block == 0 and (stride != 1 or block_in != c_out):
                expected += conv_params(block_in, c_out, 1, bias=False) + batch_norm_params(c_out)
        c_in = c_out
    # torchvision's r3d_18 has 33,371,472 parameters, 512 * 400 + 400 of them in its Kinetics classifier.
    assert sum(p.numel() for p in model.parameters()) == expected == 33_371_472 - (512 * 400 + 400)
    assert [tuple(h.shape) for h in outputs.hidden_states] == [
        (1, 64, 16, 56, 56),
        (1, 64, 16, 56, 56),
        (1, 128, 8, 28, 28),
        (1, 256, 4, 14, 14),
        (1, 512, 2, 7, 7),
    ]
    assert outputs.pooler_output.shape == (1, 512)


@pytest.mark.parametrize(
    ("model_class", "conv5", "last"),
    [(AlexNetModel, (1, 256, 13, 13), (1, 256, 6, 6)), (VGGModel, (1, 512, 14, 14), (1, 512, 7, 7))],
)
def test_full_image_backbones_keep_the_original_geometry(
    model_class: type[PreTrainedModel], conv5: tuple[int, ...], last: tuple[int, ...]
) -> None:
    # At 224 px the tiny-input-safe pools must change nothing: the last map is exactly what fc6 was designed for.
    with torch.device("meta"):
        model = model_class(model_class.config_class())
        outputs = model(torch.empty(1, 3, 224, 224), output_hidden_states=True)
    assert outputs.hidden_states[-1].shape == conv5
    assert outputs.last_hidden_state.shape == last
    assert outputs.pooler_output.shape == (1, 4096)


MODEL_FILES = [
    "layers.py",
    *(f"{kind}_{name}.py" for kind in ("configuration", "modeling") for name in ("alexnet", "vgg", "c3d", "r3d")),
]


@pytest.mark.parametrize("filename", MODEL_FILES)
def test_model_files_stay_self_contained(filename: str) -> None:
    # trust_remote_code copies these files flat next to a checkpoint: only torch, transformers (and its
    # huggingface_hub), the stdlib and single-dot siblings can be imported.
    source = (Path(hf_ssl.__file__).parent / "models" / filename).read_text()
    allowed_roots = {"torch", "transformers", "huggingface_hub", "math", "collections", "typing", "dataclasses"}
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                assert node.level == 1 and node.module and "." not in node.module, ast.unparse(node)
            else:
                assert node.module.split(".")[0] in allowed_roots, ast.unparse(node)
        elif isinstance(node, ast.Import):
            assert all(alias.name.split(".")[0] in allowed_roots for alias in node.names), ast.unparse(node)


@pytest.mark.parametrize(
    "depths", [(1, 1, 1, 1, 1), (3, 3, 3, 3, 3), (5, 5, 5, 5, 5), (7, 7, 7, 7, 7), (3, 3, 5, 5, 7), (7, 5, 5, 3, 3)]
)
def test_c3d_temporal_depth_study(depths) -> None:
    """Tran et al.'s depth study: each stage's kernels are d x 3 x 3 and every setting keeps the clip's geometry."""
    config = C3DConfig(width_multiplier=1 / 32, fc_dim=16, temporal_kernel_depths=depths)
    with torch.device("meta"):
        model = C3DModel(config)
        outputs = model(torch.empty(1, 16, 3, 32, 32), output_hidden_states=True)
    kernels = [m.kernel_size for m in model.modules() if isinstance(m, torch.nn.Conv3d)]
    assert [k[0] for k in kernels] == [d for d, n in zip(depths, (1, 1, 2, 2, 2)) for _ in range(n)]
    assert [h.shape[2] for h in outputs.hidden_states] == [16, 16, 8, 4, 2]  # time: only the pools shorten it


def test_c3d_depth_1_is_a_2d_conv_per_frame() -> None:
    torch.manual_seed(0)
    model = C3DModel(C3DConfig(width_multiplier=1 / 32, fc_dim=16, temporal_kernel_depths=(1, 3, 3, 3, 3))).eval()
    clip = torch.randn(1, 4, 3, 16, 16)
    changed = clip.clone()
    changed[:, 2] += 1
    with torch.no_grad():
        conv1, conv1_changed = (model(c, output_hidden_states=True).hidden_states[0] for c in (clip, changed))
    same = (conv1 == conv1_changed).flatten(3).all(-1).all(1)[0]  # per frame
    assert same.tolist() == [True, True, False, True]


def test_c3d_temporal_depth_must_be_odd() -> None:
    with pytest.raises(ValueError, match="temporal_kernel_depths"):
        C3DConfig(temporal_kernel_depths=(3, 3, 4, 3, 3))
