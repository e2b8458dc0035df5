"""``python -m harness.sample_size``: how much one evaluation varies at n = 100 vs n = 5,000. The code lives in ``harness.evaluation.sample_size``."""

from harness.evaluation.sample_size import main

if __name__ == "__main__":
    main()
