"""Linear probes on frozen features: one linear classifier on standardised features, trained with AdamW and a
cosine schedule, deterministic for a given seed."""

import numpy as np
import torch
from tqdm.auto import tqdm


def train_linear_probe(
    train_features: np.ndarray,
    train_labels: np.ndarray,
    test_features: np.ndarray,
    num_classes: int,
    epochs: int = 100,
    batch_size: int = 256,
    learning_rate: float = 1e-3,
    weight_decay: float = 5e-4,
    seed: int = 0,
    device: str | torch.device = "cpu",
    description: str = "linear probe",
    progress: bool = True,
) -> np.ndarray:
    """Class scores (num_test, num_classes) of a linear classifier trained on (train_features, train_labels).

    Features are standardised with the training mean and standard deviation first (a BatchNorm without affine
    parameters, as in the DeepCluster probes): layers differ in scale by orders of magnitude, and one learning
    rate then fits all of them.
    """
    if len(train_features) != len(train_labels):
        raise ValueError(f"{description}: {len(train_features)} training features but {len(train_labels)} labels")
    if train_labels.min() < 0:
        raise ValueError(f"{description}: the training split has examples without a label (label -1)")
    generator = torch.Generator().manual_seed(seed)
    x = torch.from_numpy(train_features).float()
    mean, std = x.mean(0), x.std(0).clamp_min(1e-6)
    x = ((x - mean) / std).to(device)
    y = torch.from_numpy(train_labels).long().to(device)
    probe = torch.nn.Linear(x.shape[1], num_classes).to(device)
    with torch.no_grad():
        probe.weight.copy_(torch.randn(probe.weight.shape, generator=generator) * 0.01)
        probe.bias.zero_()
    optimizer = torch.optim.AdamW(probe.parameters(), lr=learning_rate, weight_decay=weight_decay)
    steps_per_epoch = -(-len(x) // batch_size)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs * steps_per_epoch)
    for _ in tqdm(range(epochs), desc=description, disable=not progress, leave=False):
        order = torch.randperm(len(x), generator=generator).to(device)
        for start in range(0, len(x), batch_size):
            batch = order[start : start + batch_size]
            loss = torch.nn.functional.cross_entropy(probe(x[batch]), y[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
    with torch.no_grad():
        test = (torch.from_numpy(test_features).float() - mean) / std
        return probe(test.to(device)).float().cpu().numpy()
