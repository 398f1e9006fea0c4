"""SimSiam: the loss against the paper's equation in float64, the stop-gradient, the heads' shapes, the predictor's
fixed learning rate, real training steps, and checkpoints (Auto classes, remote code without hf_ssl)."""

import json

import pytest
import torch
from torch import nn
from transformers import AutoModel, AutoModelForPreTraining

from hf_ssl.models import SimSiamConfig, SimSiamForPreTraining, SimSiamModel
from hf_ssl.models.modeling_contrastive import view_pairs
from hf_ssl.models.modeling_simsiam import simsiam_loss
from hf_ssl.training import parse_args, train
from hf_ssl.training.arguments import SSLTrainingArguments
from hf_ssl.training.optim import create_optimizer, create_scheduler

from .conftest import TINY_BACKBONE, short_training_args
from .test_instance_recognition import assert_loads_without_hf_ssl

SMALL = {"projection_hidden_dim": 32, "projection_dim": 16, "prediction_hidden_dim": 8}


def build(**overrides) -> SimSiamForPreTraining:
    torch.manual_seed(0)
    return SimSiamForPreTraining(SimSiamConfig(**{"backbone_config": TINY_BACKBONE, **SMALL, **overrides}))


def images(views: int, batch: int) -> torch.Tensor:
    return torch.randn(views, batch, 3, 16, 16, generator=torch.Generator().manual_seed(1))


def reference_loss(p1: torch.Tensor, p2: torch.Tensor, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
    """The paper's eq. 3, example by example in float64: D(p, z) = -(p / ||p||) . (z / ||z||),
    L = D(p1, z2) / 2 + D(p2, z1) / 2, averaged over the batch."""

    def d(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        p, z = p.double(), z.double()
        return -torch.stack([(p[i] / p[i].norm()) @ (z[i] / z[i].norm()) for i in range(len(p))]).mean()

    return d(p1, z2) / 2 + d(p2, z1) / 2


def test_loss_is_the_papers_equation() -> None:
    p1, p2, z1, z2 = torch.randn(4, 6, 8, generator=torch.Generator().manual_seed(0))
    loss = simsiam_loss(torch.stack([p1, p2]), torch.stack([z1, z2]), view_pairs(2))
    assert loss.item() == pytest.approx(reference_loss(p1, p2, z1, z2).item(), rel=1e-6)
    # its limits: -1 when every prediction points along its target, +1 when against it
    assert simsiam_loss(torch.stack([z2, z1]), torch.stack([z1, z2]), view_pairs(2)).item() == pytest.approx(-1.0)
    assert simsiam_loss(-torch.stack([z2, z1]), torch.stack([z1, z2]), view_pairs(2)).item() == pytest.approx(1.0)


def test_targets_get_no_gradient() -> None:
    predictions = torch.randn(2, 6, 8, requires_grad=True)
    projections = torch.randn(2, 6, 8, requires_grad=True)
    simsiam_loss(predictions, projections, view_pairs(2)).backward()
    assert projections.grad is None and predictions.grad.abs().sum() > 0


def test_the_models_loss_is_the_equation_on_its_own_heads() -> None:
    model = build().train()
    x = images(2, 8)
    loss = model(pixel_values=x).loss
    with torch.no_grad():  # as the official forward: each view through encoder and predictor on its own
        z1, z2 = (model.projector(model.simsiam(view).embeddings) for view in x)
        p1, p2 = model.predictor(z1), model.predictor(z2)
    assert loss.item() == pytest.approx(reference_loss(p1, p2, z1, z2).item(), rel=1e-5)
    # both views in one batch (BatchNorm statistics over both) is another loss: the check tells the two apart
    joint = build(per_view_batchnorm=False).train()
    assert joint(pixel_values=x).loss.item() != pytest.approx(loss.item(), rel=1e-3)
    # the gradient reaches the backbone through the predictor side alone, so it is not zero
    loss.backward()
    assert model.simsiam.backbone.embedder.embedder.convolution.weight.grad.abs().sum() > 0


def test_heads_have_the_papers_shapes() -> None:
    model = build(projection_hidden_dim=2048, projection_dim=2048, prediction_hidden_dim=512)  # ImageNet's
    projector, predictor = list(model.projector), list(model.predictor)
    assert [type(m) for m in projector] == [nn.Linear, nn.BatchNorm1d, nn.ReLU] * 2 + [nn.Linear, nn.BatchNorm1d]
    assert [(m.in_features, m.out_features) for m in projector if isinstance(m, nn.Linear)] == [
        (16, 2048),
        (2048, 2048),
        (2048, 2048),
    ]
    assert [m.affine for m in projector if isinstance(m, nn.BatchNorm1d)] == [True, True, False]
    assert [type(m) for m in predictor] == [nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Linear]
    assert [(m.in_features, m.out_features) for m in predictor if isinstance(m, nn.Linear)] == [
        (2048, 512),
        (512, 2048),
    ]
    cifar = build(projection_layers=2)
    assert [type(m) for m in cifar.projector] == [nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Linear, nn.BatchNorm1d]


@pytest.mark.parametrize("fixed", [True, False])
def test_the_predictor_keeps_its_learning_rate_while_the_rest_decays(fixed: bool) -> None:
    model = build(fixed_predictor_lr=fixed)
    args = SSLTrainingArguments(
        output_dir="unused",
        optim="sgd",
        learning_rate=0.06,
        momentum=0.9,
        weight_decay=5e-4,
        lr_scheduler_type="cosine",
        warmup_epochs=0,
    )
    optimizer = create_optimizer(model, args)
    scheduler = create_scheduler(optimizer, args, total_steps=10, steps_per_epoch=5)
    predictor = {id(p) for p in model.predictor.parameters()}
    for _ in range(6):
        optimizer.step()
        scheduler.step()
    for group in optimizer.param_groups:
        in_predictor = {id(p) in predictor for p in group["params"]}
        assert len(in_predictor) == 1 or not fixed  # a fixed lr puts the predictor in groups of its own
        if in_predictor == {True} and fixed:
            assert group["lr"] == 0.06
        else:
            assert group["lr"] == pytest.approx(0.06 * 0.5 * (1 + torch.cos(torch.tensor(0.6 * torch.pi)).item()))


def test_bad_hyper_parameters_are_named() -> None:
    with pytest.raises(ValueError, match="prediction_hidden_dim must be >= 1"):
        build(prediction_hidden_dim=0)
    with pytest.raises(ValueError, match=r"num_views=2, batch"):
        build()(pixel_values=images(3, 4))


def test_training_steps_lower_the_loss_on_real_images(tmp_path) -> None:
    args = parse_args(short_training_args("simsiam", SMALL, tmp_path / "out"))
    results = train(*args)
    losses = [r["loss"] for r in json.loads((tmp_path / "out" / "training_history.json").read_text()) if "loss" in r]
    assert losses[-1] < losses[0] and -1.0 <= min(losses), losses
    assert results.get(protocol="knn", k=20, metric="top1_accuracy").value > 15.0  # chance is 10 %
    assert type(AutoModel.from_pretrained(tmp_path / "out")) is SimSiamModel


def test_checkpoints_round_trip_and_load_without_hf_ssl(tmp_path) -> None:
    model = build().train()
    model(pixel_values=images(2, 8))  # running statistics of the BatchNorm layers, the output's included
    model.eval().save_pretrained(tmp_path / "ckpt")
    again = AutoModelForPreTraining.from_pretrained(tmp_path / "ckpt").eval()
    assert type(again) is SimSiamForPreTraining
    for (name, a), b in zip(model.state_dict().items(), again.state_dict().values()):
        assert torch.equal(a, b), name
    features = AutoModel.from_pretrained(tmp_path / "ckpt").eval()
    assert type(features) is SimSiamModel
    x = images(2, 3)[0]
    assert torch.equal(features(x).embeddings, model.base_model(x).embeddings)
    assert_loads_without_hf_ssl(model, tmp_path / "remote")
