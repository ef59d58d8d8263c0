"""Hyperparameter search with Optuna: search spaces, the study runner and its report.

    from recvae.tuning.spaces import load_space
    from recvae.tuning.study import StudyOptions, run_study

`recvae tune` is the command-line front end; docs/tuning.md is the user guide.
"""
