"""Share of Local Aggregation's neighbour work in its training step, measured side by side in one run.

(a) a whole LA step: forward, logits against the memory bank, background neighbours (top-k of the bank), close
    neighbours (shared clusters in any of H clusterings), loss, backward, SGD step, bank update;
(b) the neighbour work alone (`LocalAggregationForPreTraining.neighbours`) on the logits of the same batch;
(c) an Instance Recognition step with the exact softmax over the same bank (LA's loss without neighbours).

Steps alternate (ABC, CBA, ...) so that drift in clock speed or load hits all alike. Goal: (b) / (a) <= 0.15.

    python bench/local_aggregation_step.py                        # ResNet-18 at width 1/4, 32 px, CIFAR-10 bank
    python bench/local_aggregation_step.py --num-clusterings 3 --num-clusters 1000
    python bench/local_aggregation_step.py --backbone resnet50 --width 1 --image-size 224 --num-examples 1281167 \\
        --num-clusters 30000 --device cuda
"""

import argparse
import statistics

import torch
from step_overhead import backbone_config, time_ms

from hf_ssl.models import (
    InstanceRecognitionConfig,
    InstanceRecognitionForPreTraining,
    LocalAggregationConfig,
    LocalAggregationForPreTraining,
)

GOAL = 0.15


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbone", choices=["resnet18", "resnet50", "alexnet"], default="resnet18")
    parser.add_argument("--width", type=float, default=0.25)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--num-examples", type=int, default=50_000, help="memory bank rows (CIFAR-10 train set)")
    parser.add_argument("--background-neighbors", type=int, default=4096)
    parser.add_argument("--num-clusterings", type=int, default=10)
    parser.add_argument("--num-clusters", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()

    torch.manual_seed(0)
    device = torch.device(args.device)
    backbone = backbone_config(
        args.backbone, args.width, cifar_stem=args.backbone != "alexnet" and args.image_size <= 64
    )
    common = dict(backbone_config=backbone, num_examples=args.num_examples, num_negatives=0, temperature=0.07)
    la = (
        LocalAggregationForPreTraining(
            LocalAggregationConfig(
                **common,
                background_neighbors=args.background_neighbors,
                num_clusterings=args.num_clusterings,
                num_clusters=args.num_clusters,
            )
        )
        .to(device)
        .train()
    )
    ir = InstanceRecognitionForPreTraining(InstanceRecognitionConfig(**common)).to(device).train()
    ir.load_state_dict(la.state_dict(), strict=False)
    la.set_cluster_labels(torch.randint(args.num_clusters, (args.num_clusterings, args.num_examples), device=device))
    optimizers = {name: torch.optim.SGD(m.parameters(), lr=0.03, momentum=0.9) for name, m in (("la", la), ("ir", ir))}
    pixel_values = torch.randn(args.batch_size, 3, args.image_size, args.image_size, device=device)
    ids = torch.randperm(args.num_examples, device=device)[: args.batch_size]
    with torch.no_grad():
        logits = la.local_aggregation(pixel_values).embeddings @ la.memory_bank.vectors.t() / 0.07

    def step(model: torch.nn.Module, name: str):
        def run() -> None:
            loss = model(pixel_values, ids).loss
            optimizers[name].zero_grad(set_to_none=True)
            loss.backward()
            optimizers[name].step()

        return run

    steps = {"la": step(la, "la"), "neighbours": lambda: la.neighbours(logits, ids), "ir": step(ir, "ir")}
    for _ in range(args.warmup):
        for run in steps.values():
            run()
    times: dict[str, list[float]] = {name: [] for name in steps}
    for i in range(args.steps):
        for name in list(steps) if i % 2 == 0 else list(steps)[::-1]:
            times[name].append(time_ms(steps[name], device))
    median = {name: statistics.median(values) for name, values in times.items()}

    print(
        f"{args.backbone} width={args.width} batch={args.batch_size} image={args.image_size}px device={device} "
        f"threads={torch.get_num_threads()} bank={args.num_examples}x128 K={args.background_neighbors} "
        f"H={args.num_clusterings} clusters={args.num_clusters} steps={args.steps}"
    )
    for name, label in (
        ("la", "(a) LA step"),
        ("neighbours", "(b) neighbour work (top-k + shared clusters)"),
        ("ir", "(c) IR step, exact softmax over the bank"),
    ):
        print(f"{label:46s} median {median[name]:8.1f} ms")
    share = median["neighbours"] / median["la"]
    print(f"neighbour share (b)/(a) = {share:.3f}   goal <= {GOAL:.2f}: {'ok' if share <= GOAL else 'over'}")
    print(f"LA step vs IR step (a)/(c) = {median['la'] / median['ir']:.3f}")


if __name__ == "__main__":
    main()
