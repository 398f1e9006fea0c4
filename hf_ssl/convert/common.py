"""What every converter shares: reading a checkpoint without unpickling code, loading mapped weights into an hf_ssl
model (checking that nothing is left over), and writing the hf_ssl checkpoint (config + safetensors + processor +
a card naming the source and its licence)."""

import pathlib
import pickle
import re
from dataclasses import dataclass, field

import torch
from huggingface_hub import ModelCard, ModelCardData
from safetensors.torch import load_file
from transformers import PreTrainedModel

from ..data.transforms import make_image_processor
from ..data.video_processing import save_video_processor

StateDict = dict[str, torch.Tensor]


@dataclass
class Conversion:
    """A converted model and what its card says: where the weights came from, under which licence, and what of
    the hf_ssl model is not in the official checkpoint (initialised here)."""

    model: PreTrainedModel
    source: str  # the --from name
    title: str  # the paper / model, for the card
    url: str  # the official repository
    license: str  # a Hub licence id
    license_note: str
    image_size: int = 224
    resize_size: int | None = None
    normalize: bool = True  # ImageNet mean / std; False: pixels in [0, 1] (SimCLR's TF models)
    rescale: bool = True  # False: raw 0-255 pixels (the C3D port)
    num_frames: int | None = None  # clips: a video processor is saved too
    notes: list[str] = field(default_factory=list)


def read_checkpoint(path: str | pathlib.Path) -> dict:
    """The checkpoint's contents: a `.safetensors` file, or a `torch.save` file read with `weights_only=True` (only
    tensors, numbers, strings and containers; a pickled class is refused with one line)."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint file at {path}")
    if path.suffix == ".safetensors":
        return load_file(path)
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        found = re.search(r"GLOBAL ([\w.]+)", str(err))
        raise ValueError(
            f"{path} holds pickled Python objects{f' ({found.group(1)})' if found else ''}; hf-ssl convert reads "
            "tensors only (weights_only=True): save its state dict alone (README, 'Official checkpoints')"
        ) from None
    if not isinstance(checkpoint, dict):
        raise ValueError(f"{path} holds a {type(checkpoint).__name__}, not a dict of tensors (a state dict)")
    return checkpoint


def state_dict_of(checkpoint: dict, path: str | pathlib.Path) -> StateDict:
    """The tensors of a checkpoint: its `state_dict` entry when it has one (the official training scripts'
    `{'epoch', 'arch', 'state_dict', 'optimizer'}`), else the dict itself; DataParallel's `module.` (at the start or,
    as DeepCluster wraps `features` alone, inside a key) is removed."""
    tensors = checkpoint.get("state_dict", checkpoint)
    if not isinstance(tensors, dict) or not all(isinstance(v, torch.Tensor) for v in tensors.values()):
        raise ValueError(f"{path} has no state dict of tensors (neither the file nor its 'state_dict' entry)")
    return {re.sub(r"(^|\.)module\.", r"\1", key): value for key, value in tensors.items()}


def take(state_dict: StateDict, prefix: str) -> StateDict:
    """The entries under `prefix` (removed from `state_dict`), with the prefix stripped."""
    keys = [key for key in state_dict if key.startswith(prefix)]
    return {key[len(prefix) :]: state_dict.pop(key) for key in keys}


def prefixed(prefix: str, tensors: StateDict) -> StateDict:
    """`tensors` with `prefix` before every name (where they go in the hf_ssl model)."""
    return {prefix + name: value for name, value in tensors.items()}


def load_weights(model: PreTrainedModel, weights: StateDict, initialised: tuple[str, ...], source: str) -> None:
    """Load `weights` (hf_ssl names) into `model`. Every weight must find its place and shape, and every weight of
    the model must be given but those under the `initialised` prefixes (heads or state the official model lacks,
    which keep the model's own initialisation)."""
    own = model.state_dict()
    unexpected = [key for key in weights if key not in own]
    if unexpected:
        raise ValueError(f"{source}: no place in the hf_ssl model for {unexpected[0]} ({len(unexpected)} such weights)")
    for key, value in weights.items():
        if value.shape != own[key].shape:
            raise ValueError(
                f"{source}: {key} has shape {tuple(value.shape)}, the model expects {tuple(own[key].shape)}"
            )
    missing = [key for key in own if key not in weights and not key.startswith(initialised)]
    if missing:
        raise ValueError(f"{source}: the checkpoint lacks {missing[0]} ({len(missing)} weights missing)")
    model.load_state_dict(weights, strict=False)
    model.eval()


def check_leftovers(state_dict: StateDict, source: str) -> None:
    """Raise when the official checkpoint holds tensors that no converter rule used: a layout we do not know."""
    if state_dict:
        key = next(iter(state_dict))
        raise ValueError(f"{source}: unknown key {key!r} in the checkpoint ({len(state_dict)} left unmapped)")


def write_checkpoint(conversion: Conversion, checkpoint_path: str | pathlib.Path, output_dir: str | pathlib.Path):
    """Save the model (config.json + model.safetensors), its image processor (and video processor for clips) and a
    README.md card into `output_dir`."""
    output_dir = pathlib.Path(output_dir)
    conversion.model.save_pretrained(output_dir)
    processor = make_image_processor(conversion.image_size, conversion.resize_size)
    processor.do_normalize, processor.do_rescale = conversion.normalize, conversion.rescale
    processor.save_pretrained(output_dir)
    if conversion.num_frames:
        save_video_processor(processor, conversion.num_frames, output_dir)
    _card(conversion, pathlib.Path(checkpoint_path).name).save(output_dir / "README.md")


def _card(conversion: Conversion, file_name: str) -> ModelCard:
    config = conversion.model.config
    data = ModelCardData(license=conversion.license, library_name="transformers", tags=["hf_ssl", "converted"])
    notes = "\n".join(f"- {note}" for note in conversion.notes)
    content = f"""---
{data.to_yaml()}
---

# {conversion.title}, converted to hf_ssl

Weights of the official release ({conversion.url}), file `{file_name}`, converted with
`hf-ssl convert --from {conversion.source}` into hf_ssl's `{config.model_type}` model. No training was run: the
features equal the official model's (tested to 1e-5 on a model of the same layout).

**Licence.** {conversion.license_note}

```python
import hf_ssl
from transformers import AutoModel

model = AutoModel.from_pretrained("path/to/this/folder")
```

## What was converted

{notes}
"""
    return ModelCard(content)
