"""The lightly side of `bench/peer_speed.py`: images/s of lightly's training step fed by its streamed DataLoader,
then of the same step on one pre-loaded batch.

Runs in the peer environment (torch + torchvision + lightly; see ../shared/peer/README.md), never imports hf_ssl:

    $PEER/bin/python bench/peer_lightly_speed.py --config '{"method": "simclr", ...}'

`--config` is `peer_quality.py`'s settings dict plus `steps`, `warmup_steps`, `preloaded_steps` and
`channels_last`. Prints one line `RESULT {json}`: the end time of every step of both measurements and the start time
of every streamed step, from which the driver computes images/s and the data wait as it does for hf_ssl.
"""

import argparse
import gc
import json
import time

import torch
from peer_lightly_train import Method, make_optimizer, make_scheduler, read_split, train_loader, train_step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, help="JSON dict of settings (built by peer_speed.py)")
    cfg = json.loads(parser.parse_args().config)
    torch.set_num_threads(cfg["threads"])
    torch.manual_seed(cfg["seed"])
    device = torch.device(cfg["device"])
    loader = train_loader(read_split(cfg["data"], "train")[0], cfg, device)
    model = Method(cfg, cfg["total_steps"]).to(device)
    if cfg["channels_last"]:  # the model only, as hf_ssl does: the convolutions' outputs follow their weights
        model = model.to(memory_format=torch.channels_last)
    optimizer = make_optimizer(model, cfg)
    scheduler = make_scheduler(optimizer, cfg)
    model.train()
    streamed, starts, step = [], [], 0
    for views in loader:  # streamed: the loader's workers decode and augment while the main process steps
        starts.append(time.perf_counter())
        train_step(model, optimizer, scheduler, views, step, cfg, device)
        step += 1
        streamed.append(time.perf_counter())
        if step == cfg["steps"]:
            break
    del loader  # its (persistent) workers stop: the pre-loaded measurement has the cores to itself
    gc.collect()
    preloaded = []
    for _ in range(cfg["preloaded_steps"]):  # the same step on the last streamed batch
        train_step(model, optimizer, scheduler, views, step, cfg, device)
        step += 1
        preloaded.append(time.perf_counter())
    print("RESULT " + json.dumps({"streamed": streamed, "preloaded": preloaded, "starts": starts}), flush=True)


if __name__ == "__main__":
    main()
