"""Feature spaces: the classifiers whose penultimate activations every sample-quality metric is computed in.

A verdict that flips with the choice of feature extractor is not a finding, so the harness ships more than one
and computes every metric in each (see docs/metrics.md). Each space is one entry here: the network asset, its
feature bank (features and labels of the 10,000 test images), and how ``python -m harness.pretrain evaluator
NAME`` trains it. Adding a space is one entry plus its trained assets.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class FeatureSpace:
    name: str
    network_asset: str  # asset file (without .pt) of the classifier
    bank_asset: str  # asset file of its features of the test split
    kind: str  # networks.REGISTRY key
    net: dict = field(default_factory=dict)  # constructor arguments
    seed: int = 0  # training seed
    epochs: int = 4
    flip_augment: bool = True
    description: str = ""


FEATURE_SPACES: dict[str, FeatureSpace] = {
    "vgg": FeatureSpace(
        name="vgg", network_asset="evaluator", bank_asset="feature-bank", kind="evaluator",
        net={"width": 32, "feature_dim": 128}, seed=0, epochs=4, flip_augment=True,
        description="4-conv VGG-style classifier (BatchNorm, max-pooling, dropout), 128-d features"),
    "resnet": FeatureSpace(
        name="resnet", network_asset="evaluator-resnet", bank_asset="feature-bank-resnet", kind="evaluator-resnet",
        net={"width": 24, "feature_dim": 64}, seed=1, epochs=4, flip_augment=False,
        description="residual classifier (GroupNorm, SiLU, strided convs, global average pooling), 64-d features, "
                    "another training seed and no flip augmentation"),
}
PRIMARY_SPACE = "vgg"  # the space of the study objective and of the per-round curves (the first one shipped)


def get(name: str) -> FeatureSpace:
    if name not in FEATURE_SPACES:
        raise ValueError(f"unknown feature space {name!r}; known: {', '.join(FEATURE_SPACES)}")
    return FEATURE_SPACES[name]
