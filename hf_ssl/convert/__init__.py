"""`hf-ssl convert`: official checkpoints of the seed methods -> hf_ssl checkpoints (config + safetensors + image
processor + a card naming the source and its licence). Files are read as safetensors or with
`torch.load(weights_only=True)`: nothing but tensors is unpickled."""

import pathlib
from collections.abc import Callable
from functools import partial

from . import c3d, deepcluster, moco, npid, swav, torchvision_resnet
from .common import Conversion, read_checkpoint, write_checkpoint

# --from name -> converter(checkpoint contents, path) -> Conversion
SOURCES: dict[str, Callable[[dict, str], Conversion]] = {
    "deepcluster": deepcluster.convert,
    "npid": npid.convert,
    "moco": moco.convert,
    "swav": swav.convert,
    "simclr": partial(torchvision_resnet.convert, source="simclr"),
    "byol": partial(torchvision_resnet.convert, source="byol"),
    "c3d": c3d.convert,
}


def convert_checkpoint(source: str, checkpoint_path: str | pathlib.Path, output_dir: str | pathlib.Path) -> Conversion:
    """Convert the official `source` checkpoint at `checkpoint_path` and write the hf_ssl checkpoint to
    `output_dir` (loadable with `AutoModel` / `AutoModelForPreTraining`)."""
    if source not in SOURCES:
        raise ValueError(f"--from {source!r} is not a known source; use one of {', '.join(SOURCES)}")
    conversion = SOURCES[source](read_checkpoint(checkpoint_path), str(checkpoint_path))
    write_checkpoint(conversion, checkpoint_path, output_dir)
    return conversion


__all__ = ["SOURCES", "Conversion", "convert_checkpoint"]
