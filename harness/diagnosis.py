"""``python -m harness.diagnosis``: results/REPORT.md from study storages, by a TOML spec. The code lives in ``harness.reporting.diagnosis``."""

from harness.reporting.diagnosis import main

if __name__ == "__main__":
    main()
