"""The platform's model registry (versioned ``veil-model/1`` documents, model cards) and
the demo model fitted on generated data."""

from platform_node.models.registry import ModelRecord, ModelRegistry

__all__ = ["ModelRecord", "ModelRegistry"]
