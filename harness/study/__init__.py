"""Studies: a TOML spec (spec) -> an Optuna storage and worker processes (workers, growth) -> tables and plots
(tables). ``python -m harness.study`` is the command line (cli)."""
