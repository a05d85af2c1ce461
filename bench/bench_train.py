"""Time one training epoch of every built-in method; compare with PyTorch and bare products.

    python bench/bench_train.py                  # 60,000 MNIST images, hidden 1000, batch 256
    python bench/bench_train.py --quick          # smoke run: 6,000 images, 1 repeat
    python bench/bench_train.py --sweep          # ksparse/plain cost vs hidden size and k
    python bench/bench_train.py --gpu            # CuPy vs PyTorch on CUDA (same device)

For every method it reports, from one invocation:

* ``seconds``: median seconds per epoch over ``--repeats`` epochs (after one warm-up epoch),
  as the trainer measures them (``metrics["seconds"]``: the minibatch loop, data included);
* ``vs_torch``: that median divided by the median epoch of the same model written in PyTorch
  with autograd and ``torch.optim.Adam`` (``bench/torch_models.py``), on the same device;
  ``vs_torch_compile`` and ``vs_jax`` the same against that model under ``torch.compile``
  and against the JAX twin under ``jax.jit`` (``bench/jax_models.py``), both compiled in the
  untimed warm-up epoch (``first_call_seconds``);
* ``vs_products``: the median of (epoch seconds ÷ seconds of the bare dense matrix products of
  every step of that epoch), the products timed in the same process right after each epoch.
  Five B×D×H products per step for the autoencoders, tied or untied (X W_encᵀ, Hc W_dec,
  G W_decᵀ, dZᵀX, Hcᵀ G); three for Arora et al. (Y Wᵀ, X W, sgn(X)ᵀ R);
* ``peak_rss_mib``: the worker process's peak resident memory (``ru_maxrss``);
* ``growth_mib``: resident memory after the last epoch minus after the warm-up epoch;
  ``timed_growth_mib_per_epoch``: the same between timed epochs only, per epoch (the table's
  column: what a long run would accumulate; the warm-up epoch includes one-time costs such
  as the products' scratch arrays).

Each (method, framework) pair runs in its own worker process, so peak memory is per model and
PyTorch's OpenMP threads never share a process with OpenBLAS's. The table is printed and the
whole result is written as JSON (``--json``, default ``bench/results/latest.json``).

On machines where ``OPENBLAS_CORETYPE``/``OPENBLAS_L2_SIZE`` are set (to work around old
OpenBLAS builds) a current NumPy runs far slower kernels; benchmark with both unset in that
command only: ``env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python bench/bench_train.py``.
The JSON records the environment and, when threadpoolctl is installed, which BLAS kernel ran.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_JSON = ROOT / "bench" / "results" / "latest.json"
DEFAULT_DATA = ROOT.parent / "shared" / "data"
METHODS = ("plain", "l2", "kl", "arora", "ksparse")
#: Dense B×D×H products counted per training step.
PRODUCTS = {"arora": 3}
DEFAULT_PRODUCTS = 5


# -- worker side --------------------------------------------------------------------------------


def _rss_mib() -> float | None:
    try:
        with open("/proc/self/statm") as fh:
            pages = int(fh.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return None


def _peak_rss_mib() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


def _batch_sizes(n: int, batch: int) -> list[int]:
    return [min(batch, n - start) for start in range(0, n, batch)]


def _method_settings(name: str, k: int) -> dict[str, Any]:
    # ksparse: no k annealing, so every timed epoch runs at the target k
    return {"k": k, "k_start": k} if name == "ksparse" else {}


def _products_seconds(xp: Any, sync: Any, n_products: int, sizes: list[int], d: int, h: int):
    """Seconds of the bare dense products of one epoch (one loop over the batch sizes)."""
    rng = np.random.default_rng(0)
    b = max(sizes)

    def arr(*shape: int) -> Any:
        return xp.asarray(rng.standard_normal(shape, dtype=np.float32))

    x, g, w_enc, w_dec = arr(b, d), arr(b, d), arr(h, d), arr(h, d)
    code, dz = arr(b, h), arr(b, h)
    z, y, dh = arr(b, h), arr(b, d), arr(b, h)
    gw_enc, gw_dec = arr(h, d), arr(h, d)

    def step(m: int) -> None:
        xs, gs, cs, dzs = x[:m], g[:m], code[:m], dz[:m]
        xp.matmul(xs, w_enc.T, out=z[:m])  # encoder
        xp.matmul(cs, w_dec, out=y[:m])  # decoder
        if n_products == 3:  # Arora: sgn(X)ᵀ R
            xp.matmul(cs.T, gs, out=gw_enc)
            return
        xp.matmul(gs, w_dec.T, out=dh[:m])  # back-projection
        xp.matmul(dzs.T, xs, out=gw_enc)  # encoder weight gradient
        xp.matmul(cs.T, gs, out=gw_dec)  # decoder weight gradient

    step(b)  # warm up
    sync()
    start, cpu = time.perf_counter(), time.process_time()
    for m in sizes:
        step(m)
    sync()
    return time.perf_counter() - start, time.process_time() - cpu


def _blas_info() -> list[dict[str, Any]]:
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return []
    keep = ("user_api", "internal_api", "num_threads", "architecture", "version", "prefix")
    return [{k: v for k, v in pool.items() if k in keep} for pool in threadpool_info()]


def run_worker(spec: dict[str, Any]) -> dict[str, Any]:
    """Train one model for 1 + repeats epochs; return timings and memory."""
    from sparsekit.data import load_mnist
    from sparsekit.methods.registry import load_registry
    from sparsekit.training.settings import resolve_config

    name, framework, gpu = spec["method"], spec["framework"], spec["gpu"]
    n, hidden, batch = spec["n"], spec["hidden"], spec["batch"]
    epochs = 1 + spec["repeats"]  # one warm-up epoch, then the timed ones
    data = load_mnist(spec["data"], subset=None if n >= 60000 else n)
    n = len(data)
    method = load_registry().create(name, **_method_settings(name, spec["k"]))
    cfg = resolve_config(
        method,
        hidden=hidden,
        batch_size=batch,
        epochs=epochs,
        dtype="float32",
        gpu=gpu,
        matmul_precision=spec.get("matmul_precision", "float32"),
        optimizer=None if method.own_update else "adam",
        seed=spec.get("seed", 0),
    )
    out: dict[str, Any] = {"method": name, "framework": framework, "n": n, "tied": cfg.tied}
    sizes = _batch_sizes(n, batch)
    seconds, product_seconds, rss, cpu_seconds, product_cpu_seconds = [], [], [], [], []
    faults_per_step: list[float] = []  # page faults: fresh memory touched, per step
    if framework == "sparsekit":
        from sparsekit.training.trainer import Callback, Trainer

        class CpuClock(Callback):
            """CPU seconds of exactly the minibatch loop (the span metrics["seconds"] times)."""

            def on_epoch_begin(self, trainer: Any, epoch: int) -> None:
                self.faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
                self.start = time.process_time()

            def on_step_end(self, trainer: Any, step: int, steps: int) -> None:
                if step == steps:
                    cpu_seconds.append(time.process_time() - self.start)
                    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - self.faults
                    faults_per_step.append(faults / steps)

        backend = None
        if spec.get("simulated"):  # the GPU path on the simulated device: a dry run
            from sparsekit.backend.simulated import simulated_backend

            backend = simulated_backend("float32", cfg.matmul_precision)
        trainer = Trainer(method, data, cfg, callbacks=[CpuClock()], backend=backend)
        from sparsekit.backend import fused

        out["fused_loops"] = not gpu and fused.enabled()
        backend = trainer.backend
        xp, sync = backend.xp, backend.synchronize
        for _ in range(epochs):
            seconds.append(trainer.train_epoch()["seconds"])
            rss.append(_rss_mib())
            wall, cpu = _products_seconds(
                xp, sync, PRODUCTS.get(name, DEFAULT_PRODUCTS), sizes, data.dim, hidden
            )
            product_seconds.append(wall)
            product_cpu_seconds.append(cpu)
            # The bare products ran on BLAS's threads, which spin for about 0.1 s after a
            # call (OpenBLAS) and would slow the next epoch's first steps on threads of
            # their own; the harness must not disturb what it times.
            time.sleep(0.3)
        out["final_metrics"] = {
            k: v for k, v in trainer.history[-1].items() if isinstance(v, (int, float))
        }
        if backend.is_gpu and not spec.get("simulated"):
            pool = xp.get_default_memory_pool()
            out["gpu_pool_mib"] = pool.total_bytes() / 2**20
        out["blas"] = _blas_info()
    else:
        from sparsekit.training.trainer import INIT_SAMPLE

        sys.path.insert(0, str(Path(__file__).resolve().parent))
        init_seed, shuffle_seed = np.random.SeedSequence(cfg.seed).spawn(2)
        init_rng = np.random.default_rng(init_seed)
        rows = np.sort(init_rng.choice(n, size=min(n, INIT_SAMPLE), replace=False))
        initial = method.init_params(
            init_rng, data.dim, hidden, cfg.tied, data.take(rows, np.float64)
        )
        settings = {**method.get_params(), "lr": cfg.lr, "matmul_precision": cfg.matmul_precision}
        # Keep the images as stored (uint8) and scale each minibatch, as the trainer does.
        raw = np.asarray(getattr(data, "_data", None))
        if raw.dtype == np.uint8 and raw.shape[0] == n:
            pixels = np.ascontiguousarray(raw.reshape(n, -1))
            scale = float(getattr(data, "_scale", 1.0 / 255.0))
        else:
            pixels, scale = data.to_array(np.float32), 1.0
        step, sync = _peer_step(framework, name, initial, pixels, scale, settings, gpu, out)
        shuffle = np.random.default_rng(shuffle_seed)
        losses: list[float] = []
        first_calls = {}  # batch size -> seconds of its first step (compilation included)
        for _ in range(epochs):
            order = shuffle.permutation(n)
            sync()
            start, cpu = time.perf_counter(), time.process_time()
            for s in range(0, n, batch):
                rows = np.sort(order[s : s + batch])
                if len(rows) not in first_calls:
                    t = time.perf_counter()
                    loss = step(rows)
                    sync()
                    first_calls[len(rows)] = time.perf_counter() - t
                else:
                    loss = step(rows)
            sync()
            seconds.append(time.perf_counter() - start)
            cpu_seconds.append(time.process_time() - cpu)
            rss.append(_rss_mib())
            losses.append(float(loss))  # after the clock stopped: the model really trains
        out["last_step_loss"] = losses
        # In the untimed warm-up epoch: for torch.compile and jax.jit, one compilation per
        # batch shape (the full batch and the last, smaller one) plus that step itself.
        out["first_call_seconds"] = sum(first_calls.values())
        if gpu and framework != "jax":
            import torch

            out["gpu_peak_mib"] = torch.cuda.max_memory_allocated() / 2**20
    timed = seconds[1:] or seconds
    out["epoch_seconds"] = seconds
    # CPU seconds of the whole process per epoch (all threads): cpu/wall shows how many cores
    # the epoch kept busy, and a wall time far above it means other processes took the CPU.
    out["epoch_cpu_seconds"] = cpu_seconds
    out["load_average"] = os.getloadavg() if hasattr(os, "getloadavg") else None
    if faults_per_step:
        out["page_faults_per_step"] = faults_per_step
    out["seconds"] = statistics.median(timed)
    out["steps"] = len(sizes)
    if product_seconds:
        ratios = [s / p for s, p in zip(seconds, product_seconds, strict=True)]
        cpu_ratios = [s / p for s, p in zip(cpu_seconds, product_cpu_seconds, strict=True)]
        out["product_seconds"] = product_seconds
        out["product_cpu_seconds"] = product_cpu_seconds
        out["products_per_step"] = PRODUCTS.get(name, DEFAULT_PRODUCTS)
        out["vs_products_epochs"] = ratios[1:] or ratios
        out["vs_products_cpu_epochs"] = cpu_ratios[1:] or cpu_ratios
    out["rss_after_epoch_mib"] = rss
    out["peak_rss_mib"] = _peak_rss_mib()
    if rss[0] is not None and len(rss) > 1:
        out["growth_mib"] = rss[-1] - rss[0]
        out["growth_per_epoch_mib"] = (rss[-1] - rss[0]) / (len(rss) - 1)
    if rss[0] is not None and len(rss) > 2:
        out["timed_growth_mib_per_epoch"] = (rss[-1] - rss[1]) / (len(rss) - 2)
    return out


def _peer_step(
    framework: str,
    name: str,
    initial: dict[str, np.ndarray],
    pixels: np.ndarray,
    scale: float,
    settings: dict[str, Any],
    gpu: bool,
    out: dict[str, Any],
) -> tuple[Any, Any]:
    """(step(rows), sync()) of the peer model: PyTorch eager or compiled, or JAX jit."""
    if framework == "jax":
        import jax
        from jax_models import JaxModel, optimizer_name

        jax_model = JaxModel(name, initial, pixels, scale, settings)
        out["jax"] = jax.__version__
        out["jax_backend"] = jax.default_backend()
        out["jax_optimizer"] = optimizer_name()
        return jax_model.step, jax_model.block
    import torch
    from torch_models import make_model

    device = "cuda" if gpu else "cpu"
    if gpu:  # PyTorch's default is exact float32 products; TF32 only where the run asks
        torch.backends.cuda.matmul.allow_tf32 = settings.get("matmul_precision") == "tf32"
    model = make_model(name, initial, device, settings)
    if framework == "torch-compile":
        # The default (inductor) backend; one static graph per batch shape (dynamic=False),
        # so the last, smaller batch of an epoch gets its own graph instead of turning the
        # first into a dynamic-shape one. Autograd's backward is compiled with the forward;
        # Adam's update stays eager, as in PyTorch's own examples.
        if name == "arora":
            model.step = torch.compile(model.step, dynamic=False)
        else:
            model.loss = torch.compile(model.loss, dynamic=False)
    images = torch.from_numpy(pixels).to(device)

    def step(rows: np.ndarray) -> Any:
        x = images[torch.from_numpy(rows).to(device)].to(torch.float32) * scale
        return model.step(x)

    def sync() -> None:
        if gpu:
            torch.cuda.synchronize()

    out["torch"] = torch.__version__
    out["torch_threads"] = torch.get_num_threads()
    out["torch_blas"] = "MKL" if torch.backends.mkl.is_available() else "other"
    return step, sync


# -- driver side --------------------------------------------------------------------------------


#: Variables that set the thread count of every pool a worker may start.
THREAD_VARS = (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "SPARSEKIT_NUM_THREADS",
)


def _spawn(spec: dict[str, Any], timeout: float) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(spec)]
    # The worker imports NumPy first and calls no sparsekit.tune_process(): what a script
    # embedding sparsekit gets (sparsekit bounds BLAS's threads itself while it trains).
    env = dict(os.environ)
    if spec.get("threads"):
        env.update({var: str(spec["threads"]) for var in THREAD_VARS})
        if spec["threads"] == 1 and "XLA_FLAGS" not in env:  # JAX: XLA's own thread pool
            env["XLA_FLAGS"] = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=env)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        return {"error": " | ".join(tail) or f"exit {proc.returncode}", **spec}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _have_torch(gpu: bool) -> str | None:
    """None when PyTorch can run the comparison, else why not."""
    need_cuda = "torch.cuda.is_available()" if gpu else "True"
    code = f"import torch, sys; sys.exit(0 if {need_cuda} else 3)"
    try:
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=300)
    except subprocess.TimeoutExpired:
        return "importing torch timed out"
    if proc.returncode == 3:
        return "PyTorch has no usable CUDA device"
    if proc.returncode != 0:
        return "PyTorch is not installed (pip install torch; never a sparsekit dependency)"
    return None


def _have_jax(gpu: bool) -> str | None:
    """None when JAX can run the comparison, else why not."""
    if gpu:
        return "skipped with --gpu (the benchmark environment has jax[cpu] only)"
    code = "import jax, sys; sys.exit(0 if jax.default_backend() == 'cpu' else 3)"
    try:
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=300)
    except subprocess.TimeoutExpired:
        return "importing jax timed out"
    if proc.returncode != 0:
        return "JAX is not installed (pip install 'jax[cpu]'; never a sparsekit dependency)"
    return None


#: The peers a user could pick instead: worker framework -> (row key, table label).
PEERS = {
    "torch": ("torch", "torch"),
    "torch-compile": ("torch_compile", "compile"),
    "jax": ("jax", "jax"),
}


def _peer_notes(args: argparse.Namespace) -> dict[str, str | None]:
    """For every requested peer: None when it runs, else the note that says why not."""
    notes: dict[str, str | None] = {}
    torch_note = "skipped (--no-torch)" if args.no_torch else None
    for peer in args.peers:
        if peer == "jax":
            notes[peer] = _have_jax(args.gpu)
        else:
            torch_note = torch_note or _have_torch(args.gpu)
            notes[peer] = torch_note
    return notes


def _environment(gpu: bool) -> dict[str, Any]:
    env: dict[str, Any] = {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "openblas_env": {k: os.environ[k] for k in os.environ if k.startswith("OPENBLAS_")},
        "blas": _blas_info(),
    }
    try:
        import scipy

        env["scipy"] = scipy.__version__
    except ImportError:
        pass
    # The fused loops (sparsekit.backend.fused): Numba's version, or why they are off.
    env["sparsekit_jit"] = os.environ.get("SPARSEKIT_JIT", "1")
    try:
        import numba

        env["numba"] = numba.__version__
    except Exception as exc:
        env["numba"] = f"unavailable: {type(exc).__name__}"
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                field = {"model name": "cpu", "vendor_id": "cpu_vendor", "cpu family": "cpu_family"}
                if key.strip() in field:
                    env.setdefault(field[key.strip()], value.strip())
                if not line.strip():  # the first processor is enough
                    break
    except OSError:
        pass
    env["thread_env"] = {var: os.environ.get(var) for var in (*THREAD_VARS, "XLA_FLAGS")}
    # The peers' versions, from subprocesses so this process never loads them.
    probes = {
        "torch": "import torch; print(torch.__version__, torch.backends.mkl.is_available())",
        "jax": "import jax, jaxlib; print(jax.__version__, jaxlib.__version__)",
    }
    for peer, code in probes.items():
        try:
            proc = subprocess.run(
                [sys.executable, "-c", code], capture_output=True, text=True, timeout=300
            )
            env[peer] = proc.stdout.strip() if proc.returncode == 0 else "not installed"
        except subprocess.TimeoutExpired:
            env[peer] = "import timed out"
    if gpu:
        try:
            import cupy

            props = cupy.cuda.runtime.getDeviceProperties(0)
            env["gpu"] = (
                props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
            )
            env["cupy"] = cupy.__version__
        except Exception as exc:  # reported, not fatal: the workers fail with the reason
            env["gpu"] = f"unavailable: {exc}"
    return env


def _fmt(value: Any, spec: str = ".2f") -> str:
    return "-" if value is None else format(value, spec)


def print_table(rows: list[dict[str, Any]], device: str, peers: list[str]) -> None:
    keys = [PEERS[p] for p in peers]
    head = f"{'method':<8} {'tied':>5} {'s/epoch':>8}"
    for _, label in keys:
        head += f" {label + ' s':>9} {'vs ' + label:>10}"
    head += f" {'products s':>10} {'vs prod':>8} {'peak MiB':>9} {'MiB/epoch':>10}"
    print(f"\n{device} per epoch (median); ratios measured in the same run")
    print(head)
    print("-" * len(head))
    for row in rows:
        if "error" in row:
            print(f"{row['method']:<8} error: {row['error']}")
            continue
        line = f"{row['method']:<8} {str(row['tied']):>5} {row['seconds']:>8.3f}"
        for key, _ in keys:
            peer = row.get(key) or {}
            line += f" {_fmt(peer.get('seconds'), '.3f'):>9} {_fmt(row.get('vs_' + key)):>10}"
        line += (
            f" {_fmt(row.get('products_median'), '.3f'):>10} {_fmt(row.get('vs_products')):>8}"
            f" {row['peak_rss_mib']:>9.0f} {_fmt(row.get('timed_growth_max'), '+.2f'):>10}"
        )
        print(line)
    ran = [
        (key, label) for key, label in keys if any("seconds" in (r.get(key) or {}) for r in rows)
    ]
    if ran:
        print(
            "\npeers' first calls (median seconds; for torch.compile and jax.jit the compilation"
            " for both batch shapes, in the untimed warm-up epoch) and peak MiB"
        )
        for row in rows:
            parts = [
                f"{label} {row[key]['first_call_seconds']:.1f} s, {row[key]['peak_rss_mib']:.0f} MiB"
                for key, label in ran
                if "seconds" in (row.get(key) or {})
            ]
            print(f"{row['method']:<8} " + "; ".join(parts))


def _median_or_none(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def run_main(args: argparse.Namespace) -> dict[str, Any]:
    n = args.n or (6000 if args.quick else 60000)
    rounds = args.repeats or (1 if args.quick else 3)
    base = {
        "data": str(args.data),
        "n": n,
        "hidden": args.hidden,
        "batch": args.batch,
        "k": args.k,
        "repeats": args.epochs,
        "gpu": args.gpu,
        "simulated": args.simulated,
        "matmul_precision": args.matmul_precision,
        "threads": args.threads,
    }
    notes = _peer_notes(args)
    rows = []
    for name in args.methods:
        spec = {**base, "method": name, "framework": "sparsekit"}
        runs: list[dict[str, Any]] = []
        twins: dict[str, list[dict[str, Any]]] = {p: [] for p in notes if notes[p] is None}
        for r in range(rounds):
            print(f"[bench] {name} round {r + 1}/{rounds}: sparsekit", file=sys.stderr, flush=True)
            runs.append(_spawn(spec, args.timeout))
            if "error" in runs[-1]:
                break
            for peer, results in twins.items():
                print(f"[bench] {name} round {r + 1}/{rounds}: {peer}", file=sys.stderr, flush=True)
                results.append(_spawn({**spec, "framework": peer}, args.timeout))
        rows.append(_combine(name, runs, twins, args.clock))
        if args.partial:  # keep what is done if a long run is cut short
            args.partial.write_text(json.dumps({"partial": rows}, indent=1, default=float))
    device = "GPU (CuPy vs PyTorch CUDA)" if args.gpu else "CPU (NumPy vs PyTorch and JAX CPU)"
    if args.simulated:
        device = "simulated device (a dry run of the GPU path: no peers, CPU times)"
    threads = f"{args.threads} thread(s)" if args.threads else "default threads"
    clock = "wall-clock" if args.clock == "wall" else "process CPU"
    print_table(rows, f"{device}, {threads}, {clock} seconds", args.peers)
    for peer, note in notes.items():
        if note:
            print(f"{peer} column: {note}")
    settings = {**base, "rounds": rounds, "clock": args.clock, "peers": args.peers}
    return {
        "settings": settings,
        "torch_note": notes.get("torch"),
        "peer_notes": notes,
        "results": rows,
    }


#: Which figures of a worker each clock reads: epochs, products, per-epoch product ratios.
CLOCKS = {
    "wall": ("epoch_seconds", "product_seconds", "vs_products_epochs"),
    "cpu": ("epoch_cpu_seconds", "product_cpu_seconds", "vs_products_cpu_epochs"),
}


def _combine(
    name: str,
    runs: list[dict[str, Any]],
    twins: dict[str, list[dict[str, Any]]],
    clock: str = "wall",
) -> dict[str, Any]:
    """One row from the rounds: medians over every timed epoch, ratios per round."""
    bad = [r for r in runs if "error" in r]
    if bad:
        return {"method": name, "error": bad[0]["error"], "rounds": runs}
    epochs_key, products_key, ratio_key = CLOCKS[clock]
    timed = [s for r in runs for s in r[epochs_key][1:]]
    row: dict[str, Any] = {
        "method": name,
        "clock": clock,
        "tied": runs[0]["tied"],
        "n": runs[0]["n"],
        "steps": runs[0]["steps"],
        "seconds": statistics.median(timed),
        "seconds_min": min(timed),
        "products_per_step": runs[0]["products_per_step"],
        "products_median": statistics.median([p for r in runs for p in r[products_key][1:]]),
        "vs_products": statistics.median([q for r in runs for q in r[ratio_key]]),
        "vs_products_all": [q for r in runs for q in r[ratio_key]],
        "peak_rss_mib": max(r["peak_rss_mib"] for r in runs),
        "growth_mib": _median_or_none([r["growth_mib"] for r in runs if "growth_mib" in r]),
        "growth_max_mib": max((r["growth_mib"] for r in runs if "growth_mib" in r), default=None),
        # the largest per-epoch growth between timed epochs, over rounds
        "timed_growth_max": max(
            (r["timed_growth_mib_per_epoch"] for r in runs if "timed_growth_mib_per_epoch" in r),
            default=None,
        ),
        "final_metrics": runs[-1].get("final_metrics"),
        "blas": runs[0].get("blas"),
        "rounds": runs,
    }
    other = "cpu" if clock == "wall" else "wall"
    o_epochs, _, o_ratio = CLOCKS[other]
    row[f"{other}_seconds"] = statistics.median([s for r in runs for s in r[o_epochs][1:]])
    row[f"{other}_vs_products"] = statistics.median([q for r in runs for q in r[o_ratio]])
    for peer, results in twins.items():
        key = PEERS[peer][0]
        good = [t for t in results if "error" not in t]
        if results and not good:
            row[key] = {"error": results[0]["error"]}
            continue
        if not good:
            continue
        peer_timed = [s for t in good for s in t[epochs_key][1:]]
        row[key] = {
            "seconds": statistics.median(peer_timed),
            "seconds_min": min(peer_timed),
            f"{other}_seconds": statistics.median([s for t in good for s in t[o_epochs][1:]]),
            "first_call_seconds": statistics.median(t["first_call_seconds"] for t in good),
            "peak_rss_mib": max(t["peak_rss_mib"] for t in good),
            "version": good[0].get("jax" if peer == "jax" else "torch"),
            "threads": good[0].get("torch_threads"),
            "optimizer": good[0].get("jax_optimizer"),
            "rounds": good,
        }
        per_round = [
            statistics.median(r[epochs_key][1:]) / statistics.median(t[epochs_key][1:])
            for r, t in zip(runs, results, strict=False)
            if "error" not in t
        ]
        row[f"vs_{key}_rounds"] = per_round
        row[f"vs_{key}"] = statistics.median(per_round)
    return row


def run_sweep(args: argparse.Namespace) -> dict[str, Any]:
    n = args.n or 10000
    base = {"data": str(args.data), "n": n, "batch": args.batch, "repeats": args.repeats or 3}
    base.update(gpu=args.gpu, threads=args.threads, clock=args.clock)
    rows = []
    for hidden in args.sweep_hidden:
        configs = [("plain", args.k)] + [("ksparse", k) for k in args.sweep_k if k < hidden]
        for name, k in configs:
            print(f"[bench] sweep H={hidden} {name} k={k} ...", file=sys.stderr, flush=True)
            spec = {**base, "method": name, "framework": "sparsekit", "hidden": hidden, "k": k}
            row = _spawn(spec, args.timeout)
            if "error" not in row:
                epochs_key, products_key, ratio_key = CLOCKS[args.clock]
                row["seconds"] = statistics.median(row[epochs_key][1:])
                row["products_median"] = statistics.median(row[products_key][1:])
                row["vs_products"] = statistics.median(row[ratio_key])
            row.update(hidden=hidden, k=k if name == "ksparse" else None)
            rows.append(row)
    print(f"\nsweep on {n} images, batch {args.batch}: seconds per epoch (median)")
    head = f"{'H':>5} {'method':<8} {'k':>4} {'s/epoch':>8} {'products s':>10} {'vs prod':>8}"
    print(head)
    print("-" * len(head))
    for row in rows:
        if "error" in row:
            print(f"{row['hidden']:>5} {row['method']:<8} error: {row['error']}")
            continue
        print(
            f"{row['hidden']:>5} {row['method']:<8} {_fmt(row['k'], 'd'):>4} "
            f"{row['seconds']:>8.3f} {row['products_median']:>10.3f} {row['vs_products']:>8.2f}"
        )
    return {"settings": base, "sweep": rows}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--methods", default=",".join(METHODS), help="comma-separated built-ins")
    p.add_argument("--n", type=int, default=None, help="training images (default 60000)")
    p.add_argument("--hidden", type=int, default=1000)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--k", type=int, default=25, help="k for ksparse")
    p.add_argument(
        "--repeats", type=int, default=None, help="rounds (fresh processes) per model (default 3)"
    )
    p.add_argument("--epochs", type=int, default=2, help="timed epochs per round, after a warm-up")
    p.add_argument("--quick", action="store_true", help="6,000 images, 1 repeat (smoke run)")
    p.add_argument("--gpu", action="store_true", help="CuPy backend vs PyTorch on CUDA")
    p.add_argument(
        "--simulated",
        action="store_true",
        help="with --gpu: sparsekit's GPU path on the simulated device, no peers (a dry run)",
    )
    p.add_argument(
        "--matmul-precision",
        choices=("float32", "tf32"),
        default="float32",
        help="GPU products: exact float32 (default) or TF32, the same for CuPy and PyTorch",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="threads for BLAS, OpenMP and sparsekit in every worker (default: their own)",
    )
    p.add_argument(
        "--clock",
        choices=sorted(CLOCKS),
        default="wall",
        help="wall-clock seconds (default) or process CPU seconds, which other processes on a"
        " busy machine disturb far less (use with --threads 1)",
    )
    p.add_argument("--partial", type=Path, default=None, help=argparse.SUPPRESS)
    p.add_argument("--no-torch", action="store_true", help="skip the PyTorch columns")
    p.add_argument(
        "--peers",
        default=",".join(PEERS),
        help="peer frameworks to compare with (comma-separated: torch, torch-compile, jax)",
    )
    p.add_argument("--sweep", action="store_true", help="cost vs hidden size and k (10k images)")
    p.add_argument("--sweep-hidden", default="500,1000,2000")
    p.add_argument("--sweep-k", default="10,25,100")
    p.add_argument(
        "--data", type=Path, default=Path(os.environ.get("SPARSEKIT_DATA", DEFAULT_DATA))
    )
    p.add_argument("--json", type=Path, default=DEFAULT_JSON, help="where to write the results")
    p.add_argument("--timeout", type=float, default=1800, help="seconds per worker")
    args = p.parse_args(argv)
    if args.worker:
        print(json.dumps(run_worker(json.loads(args.worker))))
        return 0
    args.methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    args.peers = [peer.strip() for peer in args.peers.split(",") if peer.strip()]
    if args.simulated:
        if not args.gpu:
            p.error("--simulated runs the GPU path: give --gpu too")
        args.peers = []  # no peer runs on the simulated device
    unknown = sorted(set(args.peers) - set(PEERS))
    if unknown:
        p.error(f"unknown peer(s) {', '.join(unknown)}; choose from {', '.join(PEERS)}")
    args.sweep_hidden = [int(v) for v in args.sweep_hidden.split(",")]
    args.sweep_k = [int(v) for v in args.sweep_k.split(",")]
    started = time.time()
    result = run_sweep(args) if args.sweep else run_main(args)
    result["environment"] = _environment(args.gpu and not args.simulated)
    result["command"] = " ".join([Path(sys.argv[0]).name, *(argv or sys.argv[1:])])
    result["started"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started))
    result["wall_seconds"] = time.time() - started
    if result["environment"]["openblas_env"]:
        print(
            "note: OPENBLAS_* variables are set "
            f"({result['environment']['openblas_env']}); see the module docstring",
            file=sys.stderr,
        )
    path = args.json
    if args.sweep and path == DEFAULT_JSON:
        path = DEFAULT_JSON.with_name("sweep.json")
    if args.gpu and path == DEFAULT_JSON:
        path = DEFAULT_JSON.with_name("gpu.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2, default=float) + "\n")
    print(f"wrote {path}")
    failed = any("error" in r for r in result.get("results", result.get("sweep", [])))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
