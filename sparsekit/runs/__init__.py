"""The run directory: its layout, the writer that fills it, restoring from it, and the run API."""

from sparsekit.layout import EVAL_FILE, PREPROCESSING
from sparsekit.runs.api import (
    StartedRun,
    encode_run,
    evaluate_run,
    prepare_data,
    resume_run,
    resume_trainer,
    run_directory,
    run_summary,
    start_run,
    train_run,
)
from sparsekit.runs.preprocessing import read_preprocessing, save_preprocessing

__all__ = [
    "EVAL_FILE",
    "PREPROCESSING",
    "StartedRun",
    "encode_run",
    "evaluate_run",
    "prepare_data",
    "read_preprocessing",
    "resume_run",
    "resume_trainer",
    "run_directory",
    "run_summary",
    "save_preprocessing",
    "start_run",
    "train_run",
]
