"""``python -m harness.class_balance``: class histograms before and after DI. The code lives in ``harness.evaluation.class_balance``."""

from harness.evaluation.class_balance import main

if __name__ == "__main__":
    main()
