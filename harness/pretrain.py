"""``python -m harness.pretrain``: resumable training of every shipped asset. The code lives in ``harness.testbed.pretrain``."""

from harness.testbed.pretrain import main

if __name__ == "__main__":
    main()
