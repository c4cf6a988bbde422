"""The HTTP service (`distillrec serve`): a live uvicorn on a free port, queried with httpx."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")

from distillrec.errors import DistillrecError  # noqa: E402
from distillrec.experiment.api import load_run, train  # noqa: E402
from distillrec.serve import check_port, create_app  # noqa: E402
from tests.conftest import make_dataset, write_mmrec  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")

K = 5


def user_token(u: int) -> str:
    return f"U-{u:03d}"


def item_token(i: int) -> str:
    return f"item/{i:03d}"  # a slash: ids are path segments of /items/{id}/similar


@contextlib.contextmanager
def live(app) -> Iterator[str]:  # noqa: ANN001
    """Serve `app` with uvicorn on a free loopback port in a background thread; yields its base URL."""
    import uvicorn

    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", access_log=False)
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.fixture(scope="module")
def topk_run(tmp_path_factory) -> Path:
    """A LightGCN run (2 epochs) on synthetic MMRec data whose users and items have original ids."""
    tmp = tmp_path_factory.mktemp("serve")
    ds = make_dataset()
    folder = Path(write_mmrec(ds, tmp / "data" / "tiny"))
    (folder / "u_id_mapping.csv").write_text(
        "user_id\tuserID\n" + "".join(f"{user_token(u)}\t{u}\n" for u in range(ds.n_users))
    )
    (folder / "i_id_mapping.csv").write_text(
        "asin\titemID\n" + "".join(f"{item_token(i)}\t{i}\n" for i in range(ds.n_items))
    )
    (result,) = train("lightgcn", str(folder), seeds=[1], set={"epochs": 2}, out=tmp / "runs")
    return result.run_dir


@pytest.fixture(scope="module")
def served(topk_run) -> Iterator[str]:
    with live(create_app(topk_run, "cpu")) as url:
        yield url


def expected_lists(run_dir: Path, users: list[int], k: int, exclude_seen: bool = False) -> list[list[str]]:
    top = load_run(run_dir, "cpu").recommend(users, k, exclude_seen=exclude_seen)
    return [[item_token(i) for i in row] for row in top.tolist()]


def test_lists_equal_run_recommend_one_by_one_and_in_a_batch(served, topk_run):
    users = list(range(30))
    for exclude_seen in (False, True):
        want = expected_lists(topk_run, users, K, exclude_seen)
        with httpx.Client(base_url=served) as client:
            flag = {"exclude_seen": "true"} if exclude_seen else {}
            for u in users:
                r = client.get("/recommend", params={"user": user_token(u), "k": K, **flag})
                assert r.status_code == 200, r.text
                body = r.json()
                assert body["user"] == user_token(u) and body["items"] == want[u]
                assert len(body["scores"]) == K and body["scores"] == sorted(body["scores"], reverse=True)
            r = client.post(
                "/recommend",
                json={"users": [user_token(u) for u in users], "k": K, "exclude_seen": exclude_seen},
            )
        assert r.status_code == 200, r.text
        results = r.json()["results"]
        assert [x["user"] for x in results] == [user_token(u) for u in users]
        assert [x["items"] for x in results] == want


def test_lists_equal_the_cli_recommend(served, topk_run):
    from typer.testing import CliRunner

    from distillrec.cli import app

    cli = CliRunner().invoke(
        app, ["recommend", str(topk_run), "--users", "0,7,29", "-k", str(K), "--exclude-seen"]
    )
    assert cli.exit_code == 0, cli.output
    rows = [line.split("\t") for line in cli.stdout.splitlines()]
    users = [user_token(u) for u in (0, 7, 29)]
    r = httpx.post(f"{served}/recommend", json={"users": users, "k": K, "exclude_seen": True})
    assert [[x["user"], *x["items"]] for x in r.json()["results"]] == rows


def test_masked_items_past_the_candidates_are_null_scores(served):
    r = httpx.get(f"{served}/recommend", params={"user": user_token(3), "k": 40, "exclude_seen": "true"})
    assert r.status_code == 200, r.text
    scores = r.json()["scores"]
    assert len(scores) == 40 and scores[-6:] == [None] * 6 and None not in scores[:-6]  # 6 known items each


def test_health(served, topk_run):
    body = httpx.get(f"{served}/health").json()
    assert body["status"] == "ok" and body["model"] == "lightgcn" and body["dataset"] == "synthetic"
    assert (body["n_users"], body["n_items"]) == (30, 40)
    assert Path(body["run_dir"]) == topk_run.resolve() and body["item_vectors"] is True


def test_similar_items_are_the_cosine_neighbours_of_the_scored_item_vectors(served, topk_run):
    item = load_run(topk_run, "cpu").representation().item
    unit = torch.nn.functional.normalize(item, dim=1)
    sims = unit @ unit[4]
    sims[4] = -torch.inf
    values, top = torch.topk(sims, K)
    r = httpx.get(f"{served}/items/{item_token(4)}/similar", params={"k": K})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["item"] == item_token(4) and body["items"] == [item_token(i) for i in top.tolist()]
    np.testing.assert_allclose(body["scores"], values.numpy(), rtol=1e-5, atol=1e-6)
    assert httpx.get(f"{served}/items/{item_token(4)}/similar", params={"k": 39}).status_code == 200
    assert httpx.get(f"{served}/items/{item_token(4)}/similar", params={"k": 40}).status_code == 400


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status", "words"),
    [
        ("get", "/recommend", {"params": {"user": "nobody"}}, 404, "unknown user 'nobody'"),
        ("get", "/recommend", {"params": {"user": "0"}}, 404, "unknown user '0'"),  # ids are the tokens
        ("get", "/recommend", {"params": {"user": user_token(1), "k": 0}}, 400, "k must be between 1 and 40"),
        ("get", "/recommend", {"params": {"user": user_token(1), "k": 41}}, 400, "got 41"),
        ("get", "/recommend", {"params": {"user": user_token(1), "k": "ten"}}, 422, "query.k"),
        ("get", "/recommend", {}, 422, "query.user: field required"),
        (
            "post",
            "/recommend",
            {"content": b"{not json", "headers": {"content-type": "application/json"}},
            400,
            "not valid JSON",
        ),
        (
            "post",
            "/recommend",
            {"content": b'{"users":', "headers": {"content-type": "application/json"}},
            400,
            "not valid JSON",
        ),
        ("post", "/recommend", {"content": b"users=1"}, 400, "must be a JSON object"),
        ("post", "/recommend", {}, 400, "must be a JSON object"),
        ("post", "/recommend", {"json": {"users": []}}, 422, "body.users"),
        ("post", "/recommend", {"json": {"k": 3}}, 422, "body.users: field required"),
        ("post", "/recommend", {"json": {"users": [user_token(1), "ghost"]}}, 404, "unknown user 'ghost'"),
        ("post", "/recommend", {"json": {"users": [user_token(1)], "k": -1}}, 400, "k must be between"),
        ("post", "/recommend", {"json": {"users": [user_token(1)], "top": 3}}, 422, "body.top"),
        ("get", "/items/ghost/similar", {}, 404, "unknown item 'ghost'"),
        ("get", f"/items/{item_token(1)}/similar", {"params": {"k": 0}}, 400, "k must be between 1 and 39"),
    ],
)
def test_bad_requests_get_a_4xx_with_one_line(served, method, path, kwargs, status, words):
    r = getattr(httpx, method)(served + path, **kwargs)
    assert r.status_code == status, r.text
    detail = r.json()["detail"]
    assert isinstance(detail, str) and "\n" not in detail and words in detail, detail


def test_fifty_parallel_clients(served, topk_run):
    users = list(range(30))
    want = expected_lists(topk_run, users, K)

    async def clients() -> list[tuple[int, int, dict]]:
        async with httpx.AsyncClient(base_url=served, limits=httpx.Limits(max_connections=50)) as client:

            async def one(n: int) -> tuple[int, int, dict]:
                u = n % len(users)
                if n % 5 == 0:
                    r = await client.post("/recommend", json={"users": [user_token(u)], "k": K})
                    return u, r.status_code, r.json()["results"][0] if r.status_code == 200 else r.json()
                r = await client.get("/recommend", params={"user": user_token(u), "k": K})
                return u, r.status_code, r.json()

            return await asyncio.gather(*(one(n) for n in range(100)))

    for u, status, body in asyncio.run(clients()):
        assert status == 200, body
        assert body["items"] == want[u]


def test_models_without_item_vectors_refuse_similar_items(tmp_path):
    folder = write_mmrec(make_dataset(seed=3), tmp_path / "data" / "plain")
    (result,) = train("mostpop", folder, seeds=[1], out=tmp_path / "runs")
    with live(create_app(result.run_dir, "cpu")) as url:
        assert httpx.get(f"{url}/health").json()["item_vectors"] is False
        r = httpx.get(f"{url}/items/3/similar")
        assert r.status_code == 409 and "no item vectors" in r.json()["detail"]
        top = load_run(result.run_dir, "cpu").recommend([0, 1], K)
        r = httpx.post(f"{url}/recommend", json={"users": [0, "1"], "k": K})  # no tokens: the indices
        assert [x["user"] for x in r.json()["results"]] == [0, 1]
        assert [x["items"] for x in r.json()["results"]] == top.tolist()


def test_next_item_runs_continue_each_users_whole_history(tmp_path):
    from tests.test_next_item import make_seq_dataset, write_seq_inter

    ds = make_seq_dataset()
    write_seq_inter(ds, tmp_path / "seqdata")
    (result,) = train(
        "sasrec", str(tmp_path / "seqdata"), seeds=[1], set={"epochs": 1}, out=tmp_path / "runs"
    )
    run = load_run(result.run_dir, "cpu")
    users = list(range(ds.n_users))
    with live(create_app(result.run_dir, "cpu")) as url, httpx.Client(base_url=url) as client:
        for exclude_seen in (False, True):
            want = run.recommend(users, K, exclude_seen=exclude_seen).tolist()
            r = client.post("/recommend", json={"users": users, "k": K, "exclude_seen": exclude_seen})
            assert [x["items"] for x in r.json()["results"]] == want
            for u in (0, 17, 39):
                r = client.get("/recommend", params={"user": u, "k": K, "exclude_seen": exclude_seen})
                assert r.json()["items"] == want[u]
        assert client.get("/health").json()["task"] == "next-item"
        assert client.get("/items/3/similar", params={"k": 3}).status_code == 200


def test_a_missing_or_unfinished_run_folder_is_one_line(tmp_path):
    with pytest.raises(DistillrecError, match="not a run folder"):
        create_app(tmp_path / "nothing", "cpu")
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "config.yaml").write_text("model: bprmf\n")
    with pytest.raises(DistillrecError, match="has not finished"):
        create_app(tmp_path / "half", "cpu")


def test_a_busy_port_is_refused_before_loading():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        with pytest.raises(DistillrecError, match="cannot listen on http://127.0.0.1:"):
            check_port("127.0.0.1", sock.getsockname()[1])


def test_the_serve_command_serves_on_loopback(topk_run):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    code = "import sys; from distillrec.cli import main; sys.argv = ['distillrec', *sys.argv[1:]]; main()"
    proc = subprocess.Popen(
        [sys.executable, "-c", code, "serve", str(topk_run), "--port", str(port), "--device", "cpu"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, proc.stdout.read()
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the serve command did not answer"
            time.sleep(0.2)
        r = httpx.get(f"http://127.0.0.1:{port}/recommend", params={"user": user_token(7), "k": K})
        assert r.json()["items"] == expected_lists(topk_run, [7], K)[0]
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=30)
    assert f"http://127.0.0.1:{port}" in out


def test_the_serve_command_names_a_missing_run_folder():
    from typer.testing import CliRunner

    from distillrec.cli import app

    result = CliRunner().invoke(app, ["serve", "no/such/run", "--port", "0"])
    assert isinstance(result.exception, DistillrecError) and "not a run folder" in str(result.exception)
