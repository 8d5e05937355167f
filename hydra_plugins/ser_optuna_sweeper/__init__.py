"""A Hydra sweeper on current Optuna (`hydra/sweeper=ser_optuna`).

hydra-optuna-sweeper 1.3.0 pins optuna<3, which pip cannot install beside current
Optuna; this is the same idea (Hydra's override grammar for the search space, one
launched job per trial, the task's return value as the objective) on Optuna's
ask/tell API.
"""
