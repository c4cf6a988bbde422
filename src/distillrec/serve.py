"""The HTTP top-K service of a finished run (`distillrec serve RUN_DIR`): FastAPI on uvicorn, one worker.

The run's model is loaded and its representation computed once, at start; a request costs one batched
score product (or, for a next-item model, one encoding of the users' histories), a mask and a top-K on
that cached representation, under the same masking as `Run.recommend` and `distillrec recommend`. Users
and items are named by the dataset's original ids (its `user_tokens` / `item_tokens`; the integer index
where the dataset has none), matched as strings.

    GET  /recommend?user=ID&k=10[&exclude_seen=true]   {"user": ID, "items": [ID, ...], "scores": [...]}
    POST /recommend  {"users": [ID, ...], "k": 10, "exclude_seen": false}   {"results": [{...}, ...]}
    GET  /items/{ID}/similar?k=10                      cosine over the item vectors the model scores with
    GET  /health                                       model, dataset, sizes, run folder

A refused request gets a 4xx status and one line, `{"detail": "..."}`. FastAPI and uvicorn are imported
only when a service is built (`pip install -e ".[serve]"`).
"""

# No `from __future__ import annotations` here: FastAPI reads the endpoints' annotations at run time, and
# the request model is defined inside `create_app`.

import asyncio
import contextlib
import logging
import math
import socket
import threading
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from distillrec.errors import DistillrecError

if TYPE_CHECKING:
    from fastapi import FastAPI

log = logging.getLogger("distillrec")

MAX_BATCH_USERS = 10_000  # users in one POST /recommend
SCORE_CHUNK = 1024  # users scored per product, bounding a request's memory to SCORE_CHUNK x n_items floats
BATCH_EXAMPLE = '{"users": ["ID", ...], "k": 10, "exclude_seen": false}'
INSTALL_HINT = 'the service needs FastAPI and uvicorn: pip install -e ".[serve]"'


class RequestError(DistillrecError):
    """A request the service refuses: `status` is its HTTP status, the message its one-line detail."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def _ids(tokens: np.ndarray | None, n: int) -> list:
    """The original ids as JSON values: the tokens as strings, or the integer indices."""
    if tokens is None:
        return list(range(n))
    return [str(t) for t in tokens]


def _index(ids: list, kind: str) -> dict[str, int]:
    """Original id (as a string) -> row; the first row wins where the dataset repeats a token."""
    index: dict[str, int] = {}
    for i, v in enumerate(ids):
        index.setdefault(str(v), i)
    if len(index) < len(ids):
        log.warning(
            "%d %s ids are repeated in the dataset; each answers for its first row",
            len(ids) - len(index),
            kind,
        )
    return index


def _floats(values: Any) -> list[float | None]:
    """Scores as JSON numbers; a masked item (-inf, only when k exceeds the unmasked items) as null."""
    return [v if math.isfinite(v) else None for v in values.tolist()]


class Scorer:
    """A finished run loaded once, with its representation cached; top-K lists by original ids.

    Thread-safe: scoring runs under one lock and `torch.inference_mode` (a model's forward is not promised
    to be re-entrant); the service calls it from one scoring thread of its own."""

    def __init__(self, run_dir: Path | str, device: str = "auto") -> None:
        import torch
        import torch.nn.functional as F

        from distillrec.eval.ranking import masked_splits
        from distillrec.experiment.api import load_run
        from distillrec.training.scoring import model_score_fn

        self.run = run = load_run(run_dir, device)
        self.run_dir = Path(run_dir).resolve()
        ds = self.dataset = run.dataset
        self.model = run.model
        self.device = run.device
        self.n_users, self.n_items = int(ds.n_users), int(ds.n_items)
        self.user_ids, self.item_ids = _ids(ds.user_tokens, ds.n_users), _ids(ds.item_tokens, ds.n_items)
        self.user_index, self.item_index = _index(self.user_ids, "user"), _index(self.item_ids, "item")
        self.sequential = self.model.task == "next-item"
        self.lock = threading.Lock()
        self.rep = run.representation()  # once; every request scores against it
        if self.sequential:
            from distillrec.data.dataset import interactions_to_csr
            from distillrec.data.next_item import event_users
            from distillrec.models.sequential.base import sequential
            from distillrec.training.next_item import sequence_score_fn

            seq = ds.sequences
            if seq is None:
                raise DistillrecError(f"dataset {ds.name!r} has no ordered histories to continue")
            self.sequences = seq
            self.sequence_fn = sequence_score_fn(sequential(self.model), self.rep)
            self.masks = {  # next-item protocol: nothing masked; exclude_seen drops the user's whole history
                False: None,
                True: interactions_to_csr(event_users(seq), seq.items, ds.n_users, ds.n_items).tocsr(),
            }
        else:
            self.score_fn = model_score_fn(self.model, self.rep)
            preset = run.train_config.preset
            mats = [getattr(ds, s) for s in masked_splits(preset, "test")]
            self.masks = {
                False: sum(mats[1:], mats[0]).tocsr(),  # what the test evaluation masked
                True: (ds.train + ds.valid + ds.test).tocsr(),  # every known interaction
            }
        item = self.rep.item
        self.item_vectors = None
        if (
            item.dim() == 2
            and item.shape[0] == self.n_items
            and item.shape[1] > 1
            and item.is_floating_point()
        ):
            self.item_vectors = F.normalize(item.detach().float(), dim=1)
        warm = np.arange(min(self.n_users, 8), dtype=np.int64)
        if self.sequential:
            warm = np.flatnonzero(np.diff(self.sequences.offsets) > 0)[:8]
        if len(warm):  # the first products pay one-off allocations: here, not on a client's request
            with torch.inference_mode():
                self._top(warm, 1, False)

    # ------------------------------------------------------------------ ids and checks
    def users_of(self, ids: list) -> np.ndarray:
        rows = []
        for u in ids:
            row = self.user_index.get(str(u))
            if row is None:
                raise RequestError(f"unknown user {str(u)!r}", 404)
            rows.append(row)
        return np.asarray(rows, dtype=np.int64)

    def item_of(self, item: str) -> int:
        row = self.item_index.get(str(item))
        if row is None:
            raise RequestError(f"unknown item {str(item)!r}", 404)
        return row

    @staticmethod
    def check_k(k: int, most: int) -> None:
        if not 1 <= k <= most:
            raise RequestError(f"k must be between 1 and {most}, got {k}")

    # ------------------------------------------------------------------ scoring
    def recommend(self, ids: list, k: int, exclude_seen: bool = False) -> list[dict[str, Any]]:
        """[{"user", "items", "scores"}] per requested id, in the order asked."""
        self.check_k(k, self.n_items)
        users = self.users_of(ids)
        scores, top = self.topk(users, k, exclude_seen)
        return [
            {"user": self.user_ids[u], "items": [self.item_ids[i] for i in row], "scores": _floats(s)}
            for u, row, s in zip(users.tolist(), top.tolist(), scores, strict=True)
        ]

    def topk(self, users: np.ndarray, k: int, exclude_seen: bool) -> tuple[np.ndarray, np.ndarray]:
        """(scores, item rows) [len(users), k] on the cached representation; rows as `Run.recommend`'s."""
        import torch

        if self.sequential:
            empty = users[self.sequences.offsets[users + 1] == self.sequences.offsets[users]]
            if len(empty):
                raise RequestError(f"user {str(self.user_ids[int(empty[0])])!r} has no history to continue")
        parts = []
        with self.lock, torch.inference_mode():
            for start in range(0, len(users), SCORE_CHUNK):
                parts.append(self._top(users[start : start + SCORE_CHUNK], k, exclude_seen))
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    def _top(self, users: np.ndarray, k: int, exclude_seen: bool) -> tuple[np.ndarray, np.ndarray]:
        import torch

        dev = self.device
        if self.sequential:
            from distillrec.data.next_item import gather_prefixes

            seq = self.sequences
            ends = seq.offsets[users + 1]
            starts = np.maximum(seq.offsets[users], ends - self.model.input_window)  # as training reads
            items, lengths = gather_prefixes(seq.items, starts, ends, self.n_items)
            scores = self.sequence_fn(torch.from_numpy(items).to(dev), torch.from_numpy(lengths).to(dev))
        else:  # into a buffer of its own, as the evaluator's product: the same kernel, the same scores
            out = torch.empty(len(users), self.n_items, dtype=torch.float32, device=dev)
            scores = self.score_fn(torch.from_numpy(users).to(dev), out)
        mask = self.masks[exclude_seen]
        if mask is not None:
            sub = mask[users]
            rows = np.repeat(np.arange(len(users)), np.diff(sub.indptr))
            scores[
                torch.from_numpy(rows).to(dev), torch.from_numpy(sub.indices.astype(np.int64)).to(dev)
            ] = -torch.inf
        values, top = torch.topk(scores, k, dim=1, sorted=True)
        return values.float().cpu().numpy(), top.cpu().numpy()

    def similar(self, item: str, k: int) -> dict[str, Any]:
        """The k items nearest to `item` by cosine of the model's item vectors (the item itself left out)."""
        import torch

        if self.item_vectors is None:
            shape = tuple(self.rep.item.shape)
            raise RequestError(
                f"model {self.run.config['model']!r} has no item vectors to compare items by (its item "
                f"representation is {shape}); similar items need a model that scores with item embeddings",
                409,
            )
        row = self.item_of(item)
        self.check_k(k, self.n_items - 1)
        with self.lock, torch.inference_mode():
            sims = self.item_vectors @ self.item_vectors[row]
            sims[row] = -torch.inf
            values, top = torch.topk(sims, k, sorted=True)
        return {
            "item": self.item_ids[row],
            "items": [self.item_ids[i] for i in top.cpu().tolist()],
            "scores": _floats(values.cpu().numpy()),
        }

    def health(self) -> dict[str, Any]:
        cfg, metrics = self.run.config, self.run.metrics
        return {
            "status": "ok",
            "model": cfg["model"],
            "distill": metrics.get("distill", []),
            "task": self.model.task,
            "dataset": self.dataset.name,
            "n_users": self.n_users,
            "n_items": self.n_items,
            "run_dir": str(self.run_dir),
            "seed": metrics.get("seed"),
            "preset": None if self.sequential else self.run.train_config.preset,
            "device": str(self.device),
            "item_vectors": self.item_vectors is not None,
        }


def _validation_detail(errors: list[dict[str, Any]]) -> str:
    """One line from FastAPI's validation errors: 'query.k: input should be a valid integer; ...'."""
    parts = []
    for e in errors:
        where = ".".join(str(p) for p in e.get("loc", ()))
        parts.append(f"{where}: {str(e.get('msg', 'invalid')).lower()}" if where else str(e.get("msg")))
    return "; ".join(parts) or "invalid request"


def create_app(run_dir: Path | str, device: str = "auto", scorer: Scorer | None = None) -> "FastAPI":
    """The FastAPI application serving the run in `run_dir` (loaded here, once; `scorer`: one already
    loaded). A missing or damaged run folder is a `DistillrecError` with one line."""
    try:
        from fastapi import FastAPI, Query, Request
        from fastapi.exceptions import RequestValidationError
        from fastapi.responses import JSONResponse
        from pydantic import BaseModel, ConfigDict, Field
    except ImportError:
        raise DistillrecError(INSTALL_HINT) from None

    scorer = scorer or Scorer(run_dir, device)
    # Every score is computed on one thread of its own: the event loop never waits on scoring, and the
    # requests do not contend for the cores (and the GIL) as they would on FastAPI's 40-thread pool.
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="distillrec-scoring")

    async def on_scoring_thread(fn: Callable[..., Any], *args: Any) -> JSONResponse:
        """fn(*args) on the scoring thread, its answer rendered to JSON there too."""
        return await asyncio.get_running_loop().run_in_executor(pool, lambda: JSONResponse(fn(*args)))

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        pool.shutdown(wait=False, cancel_futures=True)

    class BatchRequest(BaseModel):
        model_config = ConfigDict(extra="forbid")

        users: list[str | int] = Field(..., min_length=1, max_length=MAX_BATCH_USERS)
        k: int = 10
        exclude_seen: bool = False

    app = FastAPI(
        title="distillrec",
        description=f"Top-K lists of {scorer.run.config['model']} on {scorer.dataset.name} ({scorer.run_dir})",
        lifespan=lifespan,
    )
    app.state.scorer = scorer

    @app.exception_handler(RequestError)
    async def refused(request: Request, exc: RequestError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=exc.status)

    @app.exception_handler(DistillrecError)
    async def user_error(request: Request, exc: DistillrecError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=400)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = list(exc.errors())
        bad_json = [e for e in errors if e.get("type") == "json_invalid"]
        if bad_json:
            why = (bad_json[0].get("ctx") or {}).get("error", "")
            return JSONResponse(
                {"detail": f"the request body is not valid JSON{': ' + why if why else ''}"}, 400
            )
        if any(tuple(e.get("loc", ())) == ("body",) for e in errors):  # no body, or not an object
            return JSONResponse({"detail": f"the request body must be a JSON object: {BATCH_EXAMPLE}"}, 400)
        return JSONResponse({"detail": _validation_detail(errors)}, status_code=422)

    @app.get("/health")
    async def health() -> JSONResponse:
        return JSONResponse(scorer.health())

    @app.get("/recommend")
    async def recommend(
        user: str = Query(..., description="a user's original id"),
        k: int = Query(10, description="list length"),
        exclude_seen: bool = Query(False, description="also drop the user's validation and test items"),
    ) -> JSONResponse:
        return await on_scoring_thread(lambda: scorer.recommend([user], k, exclude_seen)[0])

    @app.post("/recommend")
    async def recommend_batch(body: BatchRequest) -> JSONResponse:
        return await on_scoring_thread(
            lambda: {"results": scorer.recommend(body.users, body.k, body.exclude_seen)}
        )

    @app.get("/items/{item:path}/similar")
    async def similar(item: str, k: int = Query(10, description="list length")) -> JSONResponse:
        return await on_scoring_thread(scorer.similar, item, k)

    return app


def url_of(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def check_port(host: str, port: int) -> None:
    """Refuse, in one line, an address that cannot be bound (before the model is loaded)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise DistillrecError(f"cannot listen on {host!r}: {exc.strerror}") from None
    family, _, _, _, address = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            sock.bind(address)
        except OSError as exc:
            raise DistillrecError(f"cannot listen on {url_of(host, port)}: {exc.strerror}") from None


def _say(line: str) -> None:
    print(line, flush=True)  # before uvicorn takes over, even when stdout is a pipe or a file


def serve(
    run_dir: Path | str,
    host: str = "127.0.0.1",
    port: int = 8000,
    device: str = "auto",
    echo: Callable[[str], Any] | None = None,
) -> None:
    """Load the run once and serve it with uvicorn (one worker) until interrupted."""
    try:
        import uvicorn
    except ImportError:
        raise DistillrecError(INSTALL_HINT) from None
    check_port(host, port)
    app = create_app(run_dir, device)
    s: Scorer = app.state.scorer
    (echo or _say)(
        f"serving {s.run.config['model']} on {s.dataset.name} ({s.n_users} users, {s.n_items} items) "
        f"from {s.run_dir} at {url_of(host, port)}  (GET /recommend?user=ID&k=10, POST /recommend, "
        f"GET /items/ID/similar, GET /health; Ctrl-C stops)"
    )
    uvicorn.run(app, host=host, port=port, workers=1, log_level="info", access_log=False)
