"""``python -m harness.dashboard``: a screenshot of a study in optuna-dashboard. The code lives in ``harness.reporting.dashboard``."""

from harness.reporting.dashboard import main

if __name__ == "__main__":
    main()
