"""``python -m cltrace`` (what ``torchrun ... -m cltrace`` starts on each rank)."""

from cltrace.cli import main

if __name__ == "__main__":
    main()
