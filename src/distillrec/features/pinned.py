"""float64 text embedding under pinned CPU kernels, in child processes: the same bytes on any x86-64 machine.

Computing in float64 and rounding to float32 is not enough on its own: the vector kernels torch and MKL
pick (AVX-512, AVX2, none) sum in other orders, which moves float64 results by ~3e-16, and now and then a
value lies that close to a float32 rounding boundary. On scientific's 1,585 re-embedded item texts (609k
values) an AVX-512 machine rounded one value to another float32 than an AVX2 one: another file, another
content hash, every run of an experiment on it trained again. Which kernels torch uses is fixed when the
process starts (`ATEN_CPU_CAPABILITY`, `DNNL_MAX_CPU_ISA`, MKL's `MKL_ENABLE_INSTRUCTIONS` and `MKL_CBWR`,
MKL's mode for the same results on Intel and other processors), so the encoder runs in child processes
started with the baseline set and one thread each. The batches are the in-process ones (longest texts
first, `batch_size` at a time); a batch's numbers depend only on its texts, so spreading the batches over
processes changes no bit.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np

from distillrec.errors import DistillrecError

PINNED_ENV = {
    "ATEN_CPU_CAPABILITY": "default",
    "DNNL_MAX_CPU_ISA": "SSE41",
    "MKL_ENABLE_INSTRUCTIONS": "SSE4_2",
    "MKL_CBWR": "COMPATIBLE",
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
}


def batch_plan(texts: list[str], batch_size: int) -> list[np.ndarray]:
    """The batches as indices into `texts`: longest first, `batch_size` at a time (sentence-transformers'
    own order for one `encode` call, so the numbers are those of encoding the list at once)."""
    order = np.argsort([-len(t) for t in texts], kind="stable")
    return [order[s : s + batch_size] for s in range(0, len(texts), batch_size)]


def encode_batch(encoder: object, texts: list[str], normalize: bool) -> np.ndarray:
    """float32 [len(texts), dim]: one `encode` call (sentence-transformers' signature), rounded."""
    out = encoder.encode(  # type: ignore[attr-defined]
        texts,
        batch_size=len(texts),
        convert_to_numpy=True,
        normalize_embeddings=normalize,
        show_progress_bar=False,
    )
    return np.asarray(out, dtype=np.float32).reshape(len(texts), -1)


def _child_env() -> dict[str, str]:
    import distillrec

    root = str(Path(distillrec.__file__).resolve().parents[1])
    path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, **PINNED_ENV, "PYTHONPATH": path}


def embed_pinned(
    model: str | None,
    texts: list[str],
    batch_size: int,
    normalize: bool,
    workers: int | None = None,
    advance: Callable[[int], None] = lambda n: None,
) -> np.ndarray:
    """float32 [len(texts), dim]: `model` (None = the bundled MiniLM, or a local folder / cached name) run in
    float64 in up to `workers` (default: the cores) child processes under the pinned kernels."""
    batches = batch_plan(texts, batch_size)
    n = max(1, min(workers or os.cpu_count() or 1, len(batches)))
    shares = [batches[k::n] for k in range(n)]  # strided: each process gets long and short texts alike
    with tempfile.TemporaryDirectory(prefix="distillrec-embed-") as tmp:
        procs = []
        for k, share in enumerate(shares):
            job = Path(tmp) / f"job{k}.json"
            job.write_text(
                json.dumps(
                    {
                        "model": model,
                        "normalize": normalize,
                        "batches": [[texts[i] for i in b] for b in share],
                    }
                )
            )
            cmd = [
                sys.executable,
                "-m",
                "distillrec.features.pinned",
                str(job),
                str(Path(tmp) / f"out{k}.npy"),
            ]
            with open(Path(tmp) / f"err{k}.txt", "w") as err:  # a file: a chatty child cannot fill a pipe
                procs.append(
                    subprocess.Popen(cmd, env=_child_env(), stdout=subprocess.PIPE, stderr=err, text=True)
                )

        def watch(k: int) -> None:
            out = procs[k].stdout
            assert out is not None
            for line in out:  # one count per batch encoded; anything else a library prints is skipped
                if line.strip().isdigit():
                    advance(int(line))

        try:
            threads = [threading.Thread(target=watch, args=(k,), daemon=True) for k in range(n)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            for k, p in enumerate(procs):
                if p.wait() != 0:
                    said = (Path(tmp) / f"err{k}.txt").read_text(errors="replace")
                    last = [line for line in said.splitlines() if line.strip()]
                    raise DistillrecError(
                        f"text encoder process failed: {last[-1] if last else f'exit {p.returncode}'}"
                    )
        finally:  # an error or an interrupt leaves no encoder running
            for p in procs:
                if p.poll() is None:
                    p.kill()
                p.wait()
        vectors: np.ndarray | None = None
        for k, share in enumerate(shares):
            rows = np.load(Path(tmp) / f"out{k}.npy")
            if vectors is None:
                vectors = np.empty((len(texts), rows.shape[1]), dtype=np.float32)
            vectors[np.concatenate(share)] = rows
    assert vectors is not None
    return vectors


def _child(job_path: str, out_path: str) -> None:
    import torch

    from distillrec.features.text import arithmetic, load_text_model

    capability = torch.backends.cpu.get_cpu_capability()
    if capability != "DEFAULT":
        raise DistillrecError(
            f"the kernels are not pinned: torch chose {capability} (ATEN_CPU_CAPABILITY ignored)"
        )
    torch.set_num_threads(1)
    job = json.loads(Path(job_path).read_text())
    encoder, _ = load_text_model(job["model"], "cpu")
    rows = []
    with arithmetic(encoder, "float64"):
        for batch in job["batches"]:
            rows.append(encode_batch(encoder, batch, job["normalize"]))
            print(len(batch), flush=True)
    np.save(out_path, np.concatenate(rows), allow_pickle=False)


if __name__ == "__main__":
    try:
        _child(*sys.argv[1:3])
    except DistillrecError as exc:
        print(exc, file=sys.stderr)
        sys.exit(2)
