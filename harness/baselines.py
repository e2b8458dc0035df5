"""``python -m harness.baselines``: the baseline comparison table. The code lives in ``harness.testbed.baselines``."""

from harness.testbed.baselines import main

if __name__ == "__main__":
    main()
