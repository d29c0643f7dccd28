"""ogm.models: the Decision Transformer (one file, nanoGPT style)."""

from ogm.models.decision_transformer import (
    CategoricalPolicy,
    DecisionTransformer,
    DTConfig,
    DTOutput,
    TanhGaussianPolicy,
    return_bin_edges_for,
)

__all__ = [
    "CategoricalPolicy",
    "DTConfig",
    "DTOutput",
    "DecisionTransformer",
    "TanhGaussianPolicy",
    "return_bin_edges_for",
]
