"""The method: Diff-Instruct and its variants as one loop parameterised by a frozen config.

config (DIConfig, presets, overrides) -> build (networks, optimisers) -> loop (rounds) -> steps (aux step, generator
step) -> objectives / aux_losses (what is minimised); teachers, generators, networks, schedules, noise levels,
weightings, eps ports and modes are the registries the config names.
"""
