"""The testbed: FashionMNIST, the shipped assets and their pretraining, the baselines, and the exact-score toy."""
