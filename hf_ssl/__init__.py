"""hf_ssl: self-supervised visual representation learning as transformers models.

Importing the package registers every backbone and method with the transformers Auto classes, so
``AutoModel.from_pretrained(checkpoint)`` works for any hf_ssl checkpoint.
"""

from .models import *  # noqa: F401,F403  (registration side effects + public classes)
from .models import __all__ as _models_all

__version__ = "0.1.0"
__all__ = list(_models_all)
