"""hf_ssl: self-supervised visual representation learning as transformers models.

Importing the package registers every backbone and method with the transformers Auto classes, so
``AutoModel.from_pretrained(checkpoint)`` works for any hf_ssl checkpoint. ``hf_ssl.pretrain`` trains from Python
(hf_ssl/api.py).
"""

import importlib

from .models import *  # noqa: F401,F403  (registration side effects + public classes)
from .models import __all__ as _models_all

__version__ = "0.1.0"

# The Python API and its argument dataclasses load on first use (PEP 562): `import hf_ssl` (which the Hub side and
# every loaded checkpoint pay for) stays without the training stack.
_EXPORTS = {
    "pretrain": ".api",
    "PretrainingOutput": ".api",
    "recipe_arguments": ".api",
    "ModelArguments": ".training.arguments",
    "DataArguments": ".training.arguments",
    "SSLTrainingArguments": ".training.arguments",
}

__all__ = list(_models_all) + list(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name], __name__), name)
