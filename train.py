"""Train a model: `python train.py [experiment=...] [group=option] [key=value]`; `-m` sweeps.

The same command as `ser-train` (ser/cli.py), for a checkout without an install.
"""

from ser.cli import train_main

if __name__ == "__main__":
    train_main()
