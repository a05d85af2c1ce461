"""Speed and memory of a TopK + AuxK training step: sparsekit against PyTorch eager and compiled.

    .venv/bin/python bench/topk_speed.py                      # both shapes, all three
    .venv/bin/python bench/topk_speed.py --shapes 256x4096 --steps 3 --warmup 1   # quicker
    .venv/bin/python bench/topk_speed.py --frameworks torch,torch-compile  # without sparsekit

Shapes (input dim x latents) 256 -> 4,096 and 768 -> 16,384, k = 32, batch 4,096, float32,
Adam, decoder rows kept at unit norm, AuxK on (``dead_after`` samples without firing, default
one batch, so that AuxK really runs; the number of dead latents is recorded). The data are
Gaussian rows of rank 16 (``DATA_RANK``): speed does not depend on what the rows mean, but
with full-rank rows every latent fires in every batch and AuxK would never run.

Every (shape, framework) pair runs in a fresh worker process, one after the other:

* ``sparsekit``: ``sparsekit.train("topk", ...)``'s trainer, timed per step with a callback,
  in a process tuned as the ``sparsekit`` command tunes it (``sparsekit.tune_process()``:
  glibc keeps freed memory; ``--no-tune-process`` measures a script that does not call it).
  Skipped with a note when this sparsekit has no ``topk`` method.
* ``torch``: the ordinary PyTorch model of ``bench/sae_torch.py`` (autograd, dense B×H code,
  ``torch.optim.Adam``), eager.
* ``torch-compile``: the same loss function through ``torch.compile`` (compilation happens in
  the warm-up steps, which are not timed; its seconds are recorded).

Reported per run: median seconds per step over ``--steps`` timed steps after ``--warmup``
steps, the peak resident memory of the worker (``ru_maxrss``) and the same before training
(data and imports), their difference, the dead latents at the end, thread counts, and the
ratio sparsekit / torch eager. The CPU vendor and model (``/proc/cpuinfo``) and the load
average are recorded. PyTorch runs with the interpreter of ``--torch-python PATH``, else of
``$SPARSEKIT_BENCH_TORCH_PYTHON``, else this one (``sae_compare.torch_python``); torch is never
a sparsekit dependency.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BENCH = Path(__file__).resolve().parent
SHAPES = ("256x4096", "768x16384")
FRAMEWORKS = ("sparsekit", "torch", "torch-compile")


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _current_rss_mib() -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return None


#: Rank of the benchmark data: with rank-16 rows, 10-40% of fresh latents win no top-k slot in
#: a batch, so with ``dead_after`` = one batch the AuxK term really runs (full-rank Gaussian
#: rows make every latent fire and AuxK idle).
DATA_RANK = 16


def _data(dim: int, rows: int, seed: int) -> Any:
    import numpy as np

    rng = np.random.default_rng(seed)
    basis = rng.standard_normal((DATA_RANK, dim), dtype=np.float32) / np.float32(DATA_RANK**0.5)
    return rng.standard_normal((rows, DATA_RANK), dtype=np.float32) @ basis


#: Environment variables that set the thread count of BLAS, OpenMP (PyTorch) and sparsekit.
THREAD_VARS = (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "SPARSEKIT_NUM_THREADS",
)


def _clocks() -> tuple[float, float]:
    """(wall, process CPU) seconds now: every worker records both for every step."""
    return time.perf_counter(), time.process_time()


def _per_step(marks: list[tuple[float, float]], warmup: int, clock: str) -> dict[str, Any]:
    """Median seconds per step after ``warmup`` steps, on ``clock`` ("wall" or "cpu"), and both.

    Process CPU seconds count every thread of the worker, so with ``--threads 1`` they are the
    step's own work, which other processes on a busy machine disturb far less than the wall
    clock.
    """
    wall = [b[0] - a[0] for a, b in zip(marks[:-1], marks[1:], strict=True)][warmup:]
    cpu = [b[1] - a[1] for a, b in zip(marks[:-1], marks[1:], strict=True)][warmup:]
    return {
        "clock": clock,
        "seconds_per_step": statistics.median(cpu if clock == "cpu" else wall),
        "wall_seconds_per_step": statistics.median(wall),
        "cpu_seconds_per_step": statistics.median(cpu),
        "step_seconds": cpu if clock == "cpu" else wall,
    }


def _thread_env(threads: int | None) -> dict[str, str] | None:
    """The worker's environment: every thread pool at ``threads`` when given."""
    if not threads:
        return None
    return {**os.environ, **{var: str(threads) for var in THREAD_VARS}}


# --------------------------------------------------------------------------- workers


def worker_sparsekit(job: dict[str, Any]) -> dict[str, Any]:
    import numpy as np

    import sparsekit
    from sparsekit.data import ArrayDataset
    from sparsekit.methods.registry import load_registry
    from sparsekit.training.trainer import Callback, Trainer, make_method

    name = job.get("method", "topk")
    if name not in load_registry().methods:
        return {"skipped": f"this sparsekit has no {name} method yet"}
    tuned = job.get("tune_process", True) and hasattr(sparsekit, "tune_process")
    if tuned:
        sparsekit.tune_process()  # as the sparsekit command does
    from sparsekit.training.settings import resolve_config

    steps = job["warmup"] + job["steps"]
    x = _data(job["dim"], job["batch"] * steps, job["seed"])
    rss_before = _current_rss_mib()
    method = make_method(
        name,
        k=job["k"],
        k_aux=job["k_aux"],
        aux_coef=job["aux_coef"],
        dead_after=job["dead_after"],
    )
    device = job.get("device", "cpu")
    precision = job.get("matmul_precision", "float32")
    config = resolve_config(
        method,
        hidden=job["hidden"],
        epochs=1,
        batch_size=job["batch"],
        lr=1e-4,
        optimizer="adam",
        seed=job["seed"],
        dtype="float32",
        gpu=device != "cpu",
        matmul_precision=precision,
    )
    backend = None
    if device == "simulated":
        from sparsekit.backend.simulated import simulated_backend

        backend = simulated_backend("float32", precision)
    times: list[tuple[float, float]] = []

    class Timer(Callback):
        def on_epoch_begin(self, trainer: Any, epoch: int) -> None:
            trainer.backend.synchronize()
            times.append(_clocks())

        def on_step_end(self, trainer: Any, step: int, steps: int) -> None:
            trainer.backend.synchronize()  # a GPU step is timed when it has run, not queued
            times.append(_clocks())

    trainer = Trainer(
        method, ArrayDataset(x, name="normal"), config, callbacks=[Timer()], backend=backend
    )
    trainer.fit()
    out: dict[str, Any] = {
        **_per_step(times, job["warmup"], job.get("clock", "wall")),
        "rss_before_mib": rss_before,
        "peak_rss_mib": _rss_mib(),
        "sparsekit": sparsekit.__version__,
        "threads_env": {k: os.environ.get(k) for k in THREAD_VARS},
        "device": device,
        "matmul_precision": precision,
        "tune_process": tuned,
    }
    if job.get("breakdown", True):
        clock = job.get("clock", "wall")
        out["parts"] = step_parts(trainer, x[: job["batch"]], job["k"], job["k_aux"], clock)
        out["step_over_encoder_product"] = (
            out["seconds_per_step"] / out["parts"]["encoder product"]
        )
    dead = trainer.upkeep.step_state().dead  # the mask AuxK used in the last step
    if dead is not None:
        out["dead_latents"] = int(np.asarray(trainer.backend.to_numpy(dead)).sum())
    return out


#: The parts of a TopK + AuxK step, in the step's order (``step_parts``).
PARTS = (
    "encoder product",
    "selection",
    "sparse decoder",
    "decoder gradient",
    "sparse encoder gradient",
    "auxk",
    "adam",
    "decoder-norm projection",
)


def step_parts(
    trainer: Any, x_host: Any, k: int, k_aux: int, clock: str = "wall", repeats: int = 3
) -> dict[str, float]:
    """Seconds (on ``clock``: "wall" or process "cpu") of each part of one TopK (or BatchTopK,
    Matryoshka) + AuxK step, each timed alone (median of ``repeats``) with the operations
    the step itself calls, on the trained model's weights, one batch and its dead latents,
    under the trainer's thread setting. Their sum is close to the step's time; the encoder
    product X̃·W_encᵀ is the step's floor (every other part is sparse or linear in the
    parameters). For the batch methods the selection is the batch's B·k largest and the
    decoder gradient is the method's own main term (Matryoshka's decodes each prefix)."""
    import copy

    from sparsekit.backend.process import own_threads
    from sparsekit.backend.selection import batch_top_k, top_k_indices
    from sparsekit.backend.sparse_code import code_times, code_transpose_times, gathered_dot
    from sparsekit.backend.threads import matmul
    from sparsekit.core.contract import TopK
    from sparsekit.core.step import Forward
    from sparsekit.methods import _sae
    from sparsekit.methods.batchtopk import BatchTopKSAE

    backend = trainer.backend
    xp, sync = backend.xp, backend.synchronize
    params = trainer.params
    hidden = params["W_enc"].shape[0]
    x = backend.asarray(x_host)
    batch = x.shape[0]
    state = trainer.upkeep.step_state()
    timings: dict[str, list[float]] = {name: [] for name in PARTS}
    method = trainer.method
    batched = isinstance(method, BatchTopKSAE)  # Matryoshka's code is BatchTopK's too

    now = time.process_time if clock == "cpu" else time.perf_counter

    def timed(name: str, fn: Any) -> Any:
        sync()
        start = now()
        result = fn()
        sync()
        timings[name].append(now() - start)
        return result

    def one_round() -> None:
        x_tilde = x - params["b_dec"]
        z = timed("encoder product", lambda: matmul(x_tilde, params["W_enc"].T))
        z += params["b_enc"]

        def select() -> tuple[Any, Any]:
            if batched:
                return batch_top_k(xp, z, method.selected(backend, z))
            idx = top_k_indices(xp, z, k)
            values = xp.take_along_axis(z, idx, axis=1)
            xp.maximum(values, 0, out=values)
            return idx, values

        idx, values = timed("selection", select)
        xhat = timed("sparse decoder", lambda: code_times(backend, idx, values, params["W_dec"]))
        xhat += params["b_dec"]
        g = (xhat - x) * (1.0 / batch)

        def decoder_gradient() -> Any:
            if batched:
                fwd = Forward(z, z, TopK(idx, kept=values > 0), None, values, xhat, xhat)
                d_values = method.main_term(backend, params, x, fwd, True)[3]
                d_values *= values > 0  # dZ at the kept entries (the padding's is 0)
                return d_values
            code_transpose_times(backend, idx, values, g, hidden)
            d_values = gathered_dot(backend, g, params["W_dec"], idx)
            d_values *= values > 0
            return d_values

        d_values = timed("decoder gradient", decoder_gradient)
        timed(
            "sparse encoder gradient",
            lambda: _sae.encoder_grads_sparse(
                backend, [(idx, d_values)], x_tilde, params["W_enc"], hidden, False
            ),
        )
        dead = _sae.dead_units(backend, state.dead)

        def auxk() -> None:
            if dead is None:
                return
            residual = x - xhat
            scale = _sae.auxk_scale(backend, x, residual, trainer.method.aux_coef)
            _sae.auxk_term(
                backend, z, dead, k_aux, params["W_dec"], residual, scale, x_tilde, True
            )

        timed("auxk", auxk)
        scratch = {name: value.copy() for name, value in params.items()}
        optimizer = copy.deepcopy(trainer.optimizer)
        grads = {name: xp.full_like(value, 1e-3) for name, value in scratch.items()}

        def adam() -> None:
            optimizer.start_step()
            for name, grad in grads.items():
                optimizer.update(xp, scratch, name, grad, None)

        timed("adam", adam)
        grad = grads["W_dec"]

        def projection() -> None:
            trainer.upkeep.project("W_dec", grad, scratch)
            trainer.upkeep.renormalise("W_dec", scratch)

        timed("decoder-norm projection", projection)

    with own_threads():
        for _ in range(repeats):
            one_round()

    return {name: statistics.median(values) for name, values in timings.items()}


def worker_torch(job: dict[str, Any], compiled: bool) -> dict[str, Any]:
    import torch

    sys.path.insert(0, str(BENCH))
    from sae_torch import TorchSAE

    steps = job["warmup"] + job["steps"]
    gpu = job.get("device", "cpu") == "gpu"
    if gpu:  # PyTorch's default is exact float32 products; TF32 where the run asks for it
        torch.backends.cuda.matmul.allow_tf32 = job.get("matmul_precision") == "tf32"
    device = "cuda" if gpu else "cpu"
    x_all = torch.from_numpy(_data(job["dim"], job["batch"] * steps, job["seed"]))
    rss_before = _current_rss_mib()
    torch.manual_seed(job["seed"])
    gen = torch.Generator().manual_seed(job["seed"])
    model = TorchSAE(
        job.get("method", "topk"),
        job["dim"],
        job["hidden"],
        {
            "k": job["k"],
            "k_aux": job["k_aux"],
            "aux_coef": job["aux_coef"],
            "dead_after": job["dead_after"],
        },
        gen,
        x_all[:1000],
    ).to(device)
    x_all = x_all.to(device)
    sync = torch.cuda.synchronize if gpu else (lambda: None)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    loss_fn = torch.compile(model.loss) if compiled else model.loss
    marks = [_clocks()]
    compile_seconds = None
    for step in range(steps):
        x = x_all[step * job["batch"] : (step + 1) * job["batch"]]
        loss, code = loss_fn(x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        model.project_decoder_grad()
        opt.step()
        model.normalize_decoder()
        model.after_step(code.detach())
        sync()
        marks.append(_clocks())
        if step == 0 and compiled:
            compile_seconds = marks[1][0] - marks[0][0]
    dead = model.dead_mask()
    return {
        **_per_step(marks, job["warmup"], job.get("clock", "wall")),
        "first_step_seconds": compile_seconds,
        "rss_before_mib": rss_before,
        "peak_rss_mib": _rss_mib(),
        "dead_latents": int(dead.sum()) if dead is not None else None,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "device": device,
        "matmul_precision": "tf32" if gpu and torch.backends.cuda.matmul.allow_tf32 else "float32",
        "gpu_peak_mib": torch.cuda.max_memory_allocated() / 2**20 if gpu else None,
    }


# --------------------------------------------------------------------------- driver


def _spawn(python: str, job: dict[str, Any], timeout: float) -> dict[str, Any]:
    cmd = [python, str(Path(__file__).resolve()), "--worker", json.dumps(job)]
    env = _thread_env(job.get("threads"))
    try:
        proc = subprocess.run(
            cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=env
        )
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    if proc.returncode != 0:
        lines = (proc.stderr or proc.stdout).strip().splitlines()
        return {"error": lines[-1] if lines else f"exit code {proc.returncode}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shapes", default=",".join(SHAPES))
    parser.add_argument("--frameworks", default=",".join(FRAMEWORKS))
    parser.add_argument("--k", type=int, default=32)
    parser.add_argument("--k-aux", type=int, default=512)
    parser.add_argument("--aux-coef", type=float, default=1 / 32)
    parser.add_argument("--batch", type=int, default=4096)
    parser.add_argument("--dead-after", type=int, default=None, help="default: one batch")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="threads for BLAS, OpenMP (PyTorch) and sparsekit in every worker (default: theirs)",
    )
    parser.add_argument(
        "--clock",
        choices=("wall", "cpu"),
        default="wall",
        help="the reported seconds: wall clock (default) or process CPU, which a busy machine"
        " disturbs far less (use with --threads 1); both are recorded either way",
    )
    parser.add_argument(
        "--torch-python", default=None, help="a Python with torch (default: $SPARSEKIT_BENCH_TORCH_PYTHON)"
    )
    parser.add_argument(
        "--device",
        choices=("cpu", "gpu", "simulated"),
        default="cpu",
        help="cpu (NumPy vs PyTorch CPU), gpu (CuPy vs PyTorch CUDA) or simulated (sparsekit's"
        " GPU path on the simulated device, no peers: a dry run)",
    )
    parser.add_argument("--matmul-precision", choices=("float32", "tf32"), default="float32")
    parser.add_argument(
        "--no-breakdown", action="store_true", help="skip timing the step's parts one by one"
    )
    parser.add_argument(
        "--method",
        choices=("topk", "batchtopk", "matryoshka"),
        default="topk",
        help="the SAE whose step is timed (AuxK on for all three)",
    )
    parser.add_argument(
        "--no-tune-process",
        action="store_true",
        help="leave glibc's malloc as it is (a script that embeds sparsekit and does not call "
        "sparsekit.tune_process(), which the sparsekit command does)",
    )
    parser.add_argument("--timeout", type=float, default=3600)
    parser.add_argument("--json", default=str(BENCH / "results" / "topk-speed.json"))
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        job = json.loads(args.worker)
        fw = job["framework"]
        out = worker_sparsekit(job) if fw == "sparsekit" else worker_torch(job, fw != "torch")
        print(json.dumps(out))
        return 0

    sys.path.insert(0, str(BENCH))
    from sae_compare import cpu_model
    from sae_compare import torch_python as find_torch_python

    torch_python = find_torch_python(args.torch_python)
    results = []
    for shape in args.shapes.split(","):
        dim, hidden = (int(v) for v in shape.split("x"))
        row: dict[str, Any] = {"shape": shape, "dim": dim, "hidden": hidden}
        for fw in args.frameworks.split(","):
            if fw not in FRAMEWORKS:
                raise SystemExit(f"unknown framework {fw!r}; use {', '.join(FRAMEWORKS)}")
            job = {
                "framework": fw,
                "method": args.method,
                "dim": dim,
                "hidden": hidden,
                "k": args.k,
                "k_aux": args.k_aux,
                "aux_coef": args.aux_coef,
                "batch": args.batch,
                "dead_after": args.dead_after if args.dead_after is not None else args.batch,
                "steps": args.steps,
                "warmup": args.warmup,
                "seed": 0,
                "threads": args.threads,
                "clock": args.clock,
                "device": args.device,
                "matmul_precision": args.matmul_precision,
                "breakdown": not args.no_breakdown,
                "tune_process": not args.no_tune_process,
            }
            if fw != "sparsekit" and args.device == "simulated":
                row[fw] = {"skipped": "no peer on the simulated device"}
                continue
            python = sys.executable if fw == "sparsekit" else torch_python
            print(f"[topk-speed] {shape} {fw} ...", file=sys.stderr, flush=True)
            load = os.getloadavg()
            out = _spawn(python, job, args.timeout)
            out["load_average_before"] = [round(v, 2) for v in load]
            if "peak_rss_mib" in out and out.get("rss_before_mib") is not None:
                out["training_rss_mib"] = out["peak_rss_mib"] - out["rss_before_mib"]
            row[fw] = out
            print(f"[topk-speed]   {json.dumps(out)}", file=sys.stderr, flush=True)
        sk, eager = row.get("sparsekit", {}), row.get("torch", {})
        if "seconds_per_step" in sk and "seconds_per_step" in eager:
            row["sparsekit_vs_torch_eager"] = sk["seconds_per_step"] / eager["seconds_per_step"]
        for clock in ("wall", "cpu"):
            key = f"{clock}_seconds_per_step"
            if key in sk and key in eager:
                row[f"sparsekit_vs_torch_eager_{clock}"] = sk[key] / eager[key]
        comp = row.get("torch-compile", {})
        if "seconds_per_step" in sk and "seconds_per_step" in comp:
            row["sparsekit_vs_torch_compile"] = sk["seconds_per_step"] / comp["seconds_per_step"]
        results.append(row)
    report = {
        "settings": {k: v for k, v in vars(args).items() if k not in ("worker", "json")},
        "environment": {
            "cpu": cpu_model(),
            "torch_python": torch_python,
            "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        },
        "results": results,
    }
    out_path = Path(args.json)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"{args.method}: {args.threads or 'default'} thread(s); s/step on the {args.clock} clock")
    print(
        f"{'shape':<10} {'framework':<14} {'s/step':>8} {'wall':>8} {'cpu':>8} "
        f"{'peak MiB':>9} {'train MiB':>9}"
    )
    for row in results:
        for fw in FRAMEWORKS:
            r = row.get(fw)
            if r is None:
                continue
            if "seconds_per_step" not in r:
                print(f"{row['shape']:<10} {fw:<14} {r.get('error') or r.get('skipped')}")
                continue
            print(
                f"{row['shape']:<10} {fw:<14} {r['seconds_per_step']:>8.3f} "
                f"{r.get('wall_seconds_per_step', float('nan')):>8.3f} "
                f"{r.get('cpu_seconds_per_step', float('nan')):>8.3f} "
                f"{r['peak_rss_mib']:>9.0f} {r.get('training_rss_mib', float('nan')):>9.0f}"
            )
        parts = (row.get("sparsekit") or {}).get("parts")
        if parts:
            product = parts["encoder product"]
            for name in PARTS:
                print(
                    f"{'':<10}   {name:<24} {parts[name]:>8.4f} s  "
                    f"{parts[name] / product:>5.2f}x the encoder product"
                )
            print(
                f"{'':<10}   {'whole step':<24} {row['sparsekit']['seconds_per_step']:>8.4f} s"
                f"  {row['sparsekit']['step_over_encoder_product']:>5.2f}x the encoder product"
            )
        if "sparsekit_vs_torch_eager" in row:
            print(
                f"{row['shape']:<10} sparsekit / torch eager = {row['sparsekit_vs_torch_eager']:.2f}"
            )
    print(f"results written to {out_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
