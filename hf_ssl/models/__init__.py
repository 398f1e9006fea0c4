"""Backbones and methods. Every file here is flat on purpose: transformers copies a model's modeling file and
its single-dot relative imports next to the weights, which is what lets ``trust_remote_code=True`` load an hf_ssl
checkpoint on a machine without hf_ssl. Nothing in this folder may import from outside it except torch and
transformers.

Importing it registers every row of the method table (`registry.py`) with the transformers Auto classes, and
makes each row's classes importable from here (``from hf_ssl.models import MoCoConfig``).
"""

from .registry import BACKBONES, METHODS, PRETRAINING_CLASSES, register_auto_classes

register_auto_classes()

_CLASSES = {cls.__name__: cls for row in (*BACKBONES.values(), *METHODS.values()) for cls in row.classes}
globals().update(_CLASSES)

__all__ = ["BACKBONES", "METHODS", "PRETRAINING_CLASSES", *_CLASSES]
