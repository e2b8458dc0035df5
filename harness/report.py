"""``python -m harness.report``: compare run directories (table, curves, verdicts). The code lives in ``harness.reporting.run_comparison``."""

from harness.reporting.run_comparison import main

if __name__ == "__main__":
    main()
