"""``python -m bwasync.cli``: the same as the ``bwasync`` console script."""

from ._app import main

if __name__ == "__main__":
    main()
