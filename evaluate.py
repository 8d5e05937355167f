"""Evaluate a checkpoint: `python evaluate.py ckpt_path=PATH [data=ravdess data.fold=N]`.

The same command as `ser-evaluate` (ser/cli.py), for a checkout without an install.
"""

from ser.cli import evaluate_main

if __name__ == "__main__":
    evaluate_main()
