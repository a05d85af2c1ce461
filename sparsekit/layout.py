"""The names of every file sparsekit writes: a run directory, a compare and a sweep.

One module holds them so that the writer, the readers (eval, resume, reports) and the
documentation never disagree; a leaf, so every floor may read it.
"""

from __future__ import annotations

# --------------------------------------------------------------------------- a run directory
#: Everything needed to repeat the run: method, parameters, training settings, data, version.
CONFIG = "config.json"
#: One JSON line per epoch.
METRICS = "metrics.jsonl"
#: The run's final state and numbers.
SUMMARY = "summary.json"
#: The trainer's state, written atomically at the end of every epoch.
CHECKPOINT = "checkpoint.npz"
#: The checkpoint before the last one (kept while the new one is written).
PREVIOUS_CHECKPOINT = "checkpoint.prev.npz"
#: The shards a streamed run read (names, rows, width, dtype, checksums), beside its config.
MANIFEST = "data_manifest.json"
#: The mean-removal / ZCA parameters, for runs that have them.
PREPROCESSING = "preprocessing.npz"
#: What ``sparsekit eval`` measured.
EVAL_FILE = "eval.json"
#: The contrast-normalised filter grid.
FILTERS = "filters.png"
#: The filters epoch by epoch, as an animation and as the frames it is drawn from.
PROGRESSION = "progression.gif"
FRAMES = "progression.npz"
#: Held-out inputs beside their reconstructions.
RECONSTRUCTIONS = "reconstructions.png"
#: Loss, MSE, L0 and time per epoch.
CURVES = "curves.png"

# --------------------------------------------------------------------------- SAELens files
SAELENS_CFG = "cfg.json"
SAELENS_WEIGHTS = "sae_weights.safetensors"
#: Read, never written: the list of Arrow files of a SAELens activation cache (a Hugging Face
#: ``datasets`` folder saved with ``save_to_disk``).
SAELENS_CACHE_STATE = "state.json"

# --------------------------------------------------------------------------- compare and sweep
#: A compare's plan and outcome, in its output folder.
COMPARISON = "comparison.json"
#: The HTML report of a compare or a sweep.
REPORT = "report.html"
#: One method's (one trial's) measures, in its run directory.
MEASURES = "measures.json"
#: Why a method or a trial failed, in its run directory.
FAILURE = "failure.json"
#: A sweep's table of trials, its expanded plan and the sweep file it was made from.
RESULTS = "results.csv"
PLAN = "sweep.json"
SOURCE = "sweep.toml"
