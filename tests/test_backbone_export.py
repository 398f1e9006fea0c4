"""hf_ssl checkpoints out to downstream models and pretrained weights in: `AutoBackbone` (transformers'
`BackboneMixin`) and image / video classification heads from a pre-training checkpoint, with hf_ssl and as remote code
without it; the CIFAR stem through both; `backbone_name_or_path` starts from a transformers model or from another
method's checkpoint. Every feature compared is the pre-trained model's, to 1e-5."""

import pathlib
import textwrap

import pytest
import torch
from huggingface_hub import HfApi
from safetensors.torch import save_file
from transformers import (
    AutoBackbone,
    AutoConfig,
    AutoModelForImageClassification,
    AutoModelForVideoClassification,
    ResNetConfig,
    ResNetForImageClassification,
    ViTConfig,
    ViTModel,
)

from hf_ssl.models import METHODS, PRETRAINING_CLASSES
from hf_ssl.models.modeling_backbone import as_feature_map
from hf_ssl.training.arguments import ModelArguments
from hf_ssl.training.run import build_model

from .conftest import TINY_BACKBONE
from .test_instance_recognition import HIDE_HF_SSL, run_without_hf_ssl

TINY_VIT = {
    "model_type": "vit",
    "image_size": 16,
    "patch_size": 8,
    "hidden_size": 16,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 32,
}
# name: (method, backbone_config, input shape): each of hf_ssl's backbones, a transformer, images and clips
CASES = {
    "resnet_cifar_stem": ("moco", TINY_BACKBONE, (2, 3, 16, 16)),
    "alexnet": ("deep_cluster", {"model_type": "alexnet", "width_multiplier": 1 / 32, "fc_dim": 64}, (2, 3, 64, 64)),
    "vgg": (
        "simclr",
        {"model_type": "vgg", "conv_channels": [[8], [16, 16]], "fc_dim": 32, "pool_size": 1, "sobel": False},
        (2, 3, 16, 16),
    ),
    "vit": ("byol", TINY_VIT, (2, 3, 16, 16)),
    "r3d": (
        "moco",
        {"model_type": "r3d", "width_multiplier": 1 / 8, "depths": [1, 1], "hidden_sizes": [64, 128]},
        (2, 4, 3, 16, 16),
    ),
    "c3d": ("swav", {"model_type": "c3d", "width_multiplier": 1 / 32, "fc_dim": 32}, (2, 4, 3, 16, 16)),
    "videomae": (
        "simclr",
        {"model_type": "videomae", "image_size": 32, "patch_size": 16, "num_frames": 4, "tubelet_size": 2}
        | {"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 32},
        (2, 4, 3, 32, 32),
    ),
}
SMALL = {"moco": {"queue_size": 64}, "swav": {"num_prototypes": 8, "queue_length": 0}}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def pretrained(case: str, path: pathlib.Path) -> tuple[torch.nn.Module, torch.Tensor]:
    """A pre-training model of `case` with non-trivial BatchNorm statistics, saved to `path`, and an input."""
    method, backbone_config, shape = CASES[case]
    torch.manual_seed(0)
    model = PRETRAINING_CLASSES[method](
        PRETRAINING_CLASSES[method].config_class(backbone_config=backbone_config, **SMALL.get(method, {}))
    )
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
    model.eval().save_pretrained(path)
    return model, torch.randn(*shape, generator=torch.Generator().manual_seed(1))


def auto_backbone(path: pathlib.Path, **kwargs) -> torch.nn.Module:
    """`AutoBackbone`'s class for the checkpoint's config, loaded from a local folder. (transformers 5's
    `AutoBackbone.from_pretrained` asks the Hub whether its argument is a repo and fails on any local folder, its
    own models' included; `test_auto_backbone_from_the_hub_with_and_without_hf_ssl` runs it on a Hub id.)"""
    config = AutoConfig.from_pretrained(path, **kwargs)
    model, loading = AutoBackbone._model_mapping[type(config)].from_pretrained(
        path, config=config, output_loading_info=True
    )
    assert not any(loading.values()), loading
    return model.eval()


def reference_maps(model: torch.nn.Module, pixel_values: torch.Tensor) -> list[torch.Tensor]:
    """The pre-training model's per-stage hidden states, laid out as feature maps."""
    hidden_states = model.base_model(pixel_values, output_hidden_states=True).hidden_states
    return [as_feature_map(h, pixel_values, model.config.backbone_config) for h in hidden_states]


@pytest.mark.parametrize("case", list(CASES))
def test_auto_backbone_and_classifier_give_the_pretrained_features(case: str, tmp_path: pathlib.Path) -> None:
    model, pixel_values = pretrained(case, tmp_path)
    stages = model.config.stage_names
    backbone = auto_backbone(tmp_path, out_features=stages)
    assert type(backbone).__name__ == type(model).__name__.replace("ForPreTraining", "Backbone")
    assert backbone.stage_names == backbone.out_features == stages
    with torch.no_grad():
        maps, expected = backbone(pixel_values).feature_maps, reference_maps(model, pixel_values)
    assert len(maps) == len(expected) == len(backbone.channels)
    for feature_map, reference, channels in zip(maps, expected, backbone.channels):
        assert feature_map.shape[1] == channels
        torch.testing.assert_close(feature_map, reference, atol=1e-5, rtol=0)
    if case == "vit":  # tokens on the patch grid: row-major patches after the class token
        with torch.no_grad():
            tokens = model.base_model(pixel_values, output_hidden_states=True).hidden_states[-1]
        torch.testing.assert_close(maps[-1][:, :, 0, 1], tokens[:, 2], atol=1e-5, rtol=0)
    # the default: the last stage
    assert auto_backbone(tmp_path).out_features == [stages[-1]]

    video = len(pixel_values.shape) == 5
    auto_class = AutoModelForVideoClassification if video else AutoModelForImageClassification
    classifier, loading = auto_class.from_pretrained(tmp_path, num_labels=3, output_loading_info=True)
    assert (
        loading["missing_keys"] == {"classification_head.weight", "classification_head.bias"}
        and not loading["unexpected_keys"]
    )
    with torch.no_grad():
        pooled = model.base_model(pixel_values).pooler_output
        logits = classifier.eval()(pixel_values).logits
    torch.testing.assert_close(logits, classifier.classification_head(pooled), atol=1e-5, rtol=0)
    loss = classifier.train()(pixel_values, labels=torch.tensor([0, 2])).loss
    loss.backward()
    assert classifier.classification_head.weight.grad is not None
    wrong = AutoModelForImageClassification if video else AutoModelForVideoClassification
    with pytest.raises(ValueError, match=f"AutoModelFor{'Video' if video else 'Image'}Classification"):
        wrong.from_pretrained(tmp_path, num_labels=3)


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_methods_checkpoint_is_a_backbone_and_a_classifier(method: str, tmp_path: pathlib.Path) -> None:
    row = METHODS[method]
    torch.manual_seed(0)
    small = {"jigsaw": {"num_permutations": 10, "tile_feature_dim": 16, "classifier_hidden_dim": 32}} | SMALL
    model = row.pretraining_class(row.config_class(backbone_config=TINY_BACKBONE, **small.get(method, {}))).eval()
    model.save_pretrained(tmp_path)
    pixel_values = torch.randn(2, 3, 16, 16)
    backbone = auto_backbone(tmp_path, out_indices=[0, 2])
    assert type(backbone) is row.transfer_classes["AutoBackbone"]
    # a method trained on labels ships its classifier (as many classes as it was trained on); others get a new head
    num_labels = model.config.num_labels if row.pretraining_class.requires_labels else 3
    classifier = AutoModelForImageClassification.from_pretrained(tmp_path, num_labels=num_labels).eval()
    assert type(classifier) is row.transfer_classes["AutoModelForImageClassification"]
    with torch.no_grad():
        expected = reference_maps(model, pixel_values)
        for feature_map, reference in zip(backbone(pixel_values).feature_maps, (expected[0], expected[2])):
            torch.testing.assert_close(feature_map, reference, atol=1e-5, rtol=0)
        pooled = model.base_model(pixel_values).pooler_output
        torch.testing.assert_close(
            classifier(pixel_values).logits, classifier.classification_head(pooled), atol=1e-5, rtol=0
        )


def test_cifar_stem_round_trips_through_backbone_and_classifier(tmp_path: pathlib.Path) -> None:
    model, pixel_values = pretrained("resnet_cifar_stem", tmp_path / "pretrained")
    stem = model.base_model.backbone.embedder.embedder.convolution
    assert stem.kernel_size == (3, 3) and stem.stride == (1, 1)
    backbone = auto_backbone(tmp_path / "pretrained", out_features=["stem", "stage2"])
    backbone.save_pretrained(tmp_path / "backbone")
    reloaded = auto_backbone(tmp_path / "backbone")
    assert reloaded.out_features == ["stem", "stage2"]  # the selection is saved with the config
    with torch.no_grad():
        expected = reference_maps(model, pixel_values)
        assert expected[0].shape[-1] == 16  # no downsampling in the stem at 16 px
        for feature_map, reference in zip(reloaded(pixel_values).feature_maps, (expected[0], expected[-1])):
            torch.testing.assert_close(feature_map, reference, atol=1e-5, rtol=0)

    classifier = AutoModelForImageClassification.from_pretrained(tmp_path / "pretrained", num_labels=4).eval()
    classifier.save_pretrained(tmp_path / "classifier")
    again = AutoModelForImageClassification.from_pretrained(tmp_path / "classifier").eval()
    with torch.no_grad():
        torch.testing.assert_close(again(pixel_values).logits, classifier(pixel_values).logits, atol=1e-5, rtol=0)


REMOTE_BACKBONE_CHILD = HIDE_HF_SSL + textwrap.dedent(
    """

    import torch
    from safetensors.torch import load_file
    from transformers import AutoBackbone, AutoModelForImageClassification, AutoModelForVideoClassification

    for repo_id, folder, expected_file, video in zip(*[iter(sys.argv[1:])] * 4):
        expected = load_file(expected_file)
        backbone = AutoBackbone.from_pretrained(repo_id, trust_remote_code=True, out_features=["stem", "stage1"])
        assert type(backbone).__module__.startswith("transformers_modules."), type(backbone).__module__
        maps = backbone.eval()(expected["pixel_values"]).feature_maps
        for index, feature_map in enumerate(maps):
            assert (feature_map - expected[f"map{index}"]).abs().max() < 1e-5, index
        auto_class = AutoModelForVideoClassification if video == "1" else AutoModelForImageClassification
        classifier = auto_class.from_pretrained(folder, trust_remote_code=True, num_labels=3).eval()
        logits = classifier(expected["pixel_values"]).logits
        assert (logits - classifier.classification_head(expected["pooled"])).abs().max() < 1e-5
    assert "hf_ssl" not in sys.modules
    print("REMOTE-OK")
    """
)


def test_auto_backbone_from_the_hub_with_and_without_hf_ssl(local_hub, tmp_path: pathlib.Path) -> None:
    """`AutoBackbone.from_pretrained` on Hub ids, here and in a fresh interpreter that cannot import hf_ssl
    (`trust_remote_code=True`), where the image and video classifiers also load from the local folders."""
    arguments = []
    for case in ("resnet_cifar_stem", "r3d"):
        folder = tmp_path / case
        model, pixel_values = pretrained(case, folder)
        repo_id = f"{local_hub.user}/{case.replace('_', '-')}"
        HfApi(token=local_hub.token).create_repo(repo_id)
        HfApi(token=local_hub.token).upload_folder(repo_id=repo_id, folder_path=folder)
        backbone = AutoBackbone.from_pretrained(repo_id, out_features=["stem", "stage1"]).eval()
        with torch.no_grad():
            maps = backbone(pixel_values).feature_maps
            for feature_map, reference in zip(maps, reference_maps(model, pixel_values)):
                torch.testing.assert_close(feature_map, reference, atol=1e-5, rtol=0)
            pooled = model.base_model(pixel_values).pooler_output
        tensors = {"pixel_values": pixel_values, "pooled": pooled, **{f"map{i}": m for i, m in enumerate(maps)}}
        save_file(tensors, tmp_path / f"{case}.safetensors")
        arguments += [repo_id, str(folder), str(tmp_path / f"{case}.safetensors"), str(int(pixel_values.dim() == 5))]

    hub = {"HF_ENDPOINT": local_hub.url, "HF_HUB_DISABLE_XET": "1", "OMP_NUM_THREADS": "1"}
    assert "REMOTE-OK" in run_without_hf_ssl(REMOTE_BACKBONE_CHILD, arguments, tmp_path, hub)


def tiny_resnet_classifier(path: pathlib.Path, **overrides) -> ResNetForImageClassification:
    """A transformers ResNet image classifier (ImageNet stem) saved to `path`, as from the Hub."""
    fields = {k: v for k, v in TINY_BACKBONE.items() if k not in ("model_type", "cifar_stem")}
    torch.manual_seed(3)
    model = ResNetForImageClassification(ResNetConfig(**fields | overrides, num_labels=5)).eval()
    model.save_pretrained(path)
    return model


def model_arguments(method: str, **fields) -> ModelArguments:
    return ModelArguments(method=method, method_config=SMALL.get(method, {}), **fields)


def test_pre_training_starts_from_a_transformers_checkpoint(tmp_path: pathlib.Path) -> None:
    source = tiny_resnet_classifier(tmp_path / "resnet")
    # no backbone_config: the pretrained model's architecture; MoCo's key encoder starts as the same backbone
    model = build_model(model_arguments("moco", backbone_name_or_path=str(tmp_path / "resnet")), 8, 1).eval()
    pixel_values = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = source.resnet(pixel_values).pooler_output.flatten(1)
        torch.testing.assert_close(model.moco(pixel_values).pooler_output, expected, atol=1e-5, rtol=0)
        torch.testing.assert_close(model.key_encoder.encoder(pixel_values).pooler_output, expected, atol=1e-5, rtol=0)

    # a ViT whose checkpoint has no pooler: the pooler keeps its initialisation, the rest is the checkpoint's
    vit = ViTModel(ViTConfig(**{k: v for k, v in TINY_VIT.items() if k != "model_type"}), add_pooling_layer=False)
    vit.eval().save_pretrained(tmp_path / "vit")
    model = build_model(model_arguments("simclr", backbone_name_or_path=str(tmp_path / "vit")), 8, 1).eval()
    with torch.no_grad():
        hidden = model.simclr(pixel_values[..., :16, :16]).last_hidden_state
        torch.testing.assert_close(hidden, vit(pixel_values[..., :16, :16]).last_hidden_state, atol=1e-5, rtol=0)


def test_another_methods_checkpoint_gives_its_backbone_only(tmp_path: pathlib.Path) -> None:
    source, pixel_values = pretrained("resnet_cifar_stem", tmp_path / "moco")
    model = build_model(
        model_arguments("simclr", backbone_name_or_path=str(tmp_path / "moco"), backbone_config=TINY_BACKBONE), 8, 1
    )
    assert type(model).__name__ == "SimCLRForPreTraining"
    with torch.no_grad():
        torch.testing.assert_close(
            model.eval().simclr(pixel_values).pooler_output, source.moco(pixel_values).pooler_output, atol=1e-5, rtol=0
        )


@pytest.mark.parametrize(
    ("backbone_config", "message"),
    [
        (TINY_BACKBONE, r"embedder\.embedder\.convolution\.weight has shape \(8, 3, 7, 7\)"),  # CIFAR vs ImageNet stem
        (TINY_BACKBONE | {"cifar_stem": False, "depths": [2, 1]}, r"has no weight encoder\.stages\.0\.layers\.1"),
        (
            {"model_type": "alexnet", "width_multiplier": 1 / 32},
            "holds a ResNetModel but backbone_config builds an? AlexNetModel",
        ),
    ],
)
def test_a_pretrained_backbone_of_another_architecture_is_one_line(tmp_path, backbone_config, message) -> None:
    tiny_resnet_classifier(tmp_path / "resnet")
    arguments = model_arguments(
        "simclr", backbone_name_or_path=str(tmp_path / "resnet"), backbone_config=backbone_config
    )
    with pytest.raises(ValueError, match=message) as error:
        build_model(arguments, 8, 1)
    assert "\n" not in str(error.value)


def test_continuing_and_starting_from_a_backbone_exclude_each_other() -> None:
    with pytest.raises(ValueError, match="exclude each other"):
        ModelArguments(method="moco", model_name_or_path="a", backbone_name_or_path="b")
