"""prismlab's models. Importing the package imports every model file, which registers its models
and adapters (timm's way): the registry itself knows no model module."""

from prismlab.models import adapters, backbones, bag, chammi, channelset, cool, dynamic, parallel, shallow, trunks, vit  # noqa: F401
from prismlab.models.registry import create_model, list_models, make_adapter, register_adapter, register_model

__all__ = ["create_model", "list_models", "make_adapter", "register_adapter", "register_model"]
