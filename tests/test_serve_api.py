"""The OpenAI-compatible API, driven by the official `openai` client against `gpt2 serve --no-ui --api-key`
started on 127.0.0.1 (a free port) with a random tiny model."""

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

from gpt2 import GPT, GPTConfig, save_model
from gpt2.cli import main

openai = pytest.importorskip("openai")

REPO = Path(__file__).resolve().parents[1]
KEY = "test-key-123"
PROMPT = "The meaning of life is"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(args: list[str], log: Path, ready_path: str, tmp: Path) -> tuple[subprocess.Popen, str]:
    """`gpt2 serve ARGS` on a free loopback port (temp files under ``tmp``); returns (process, base URL)
    once ``ready_path`` answers."""
    port = free_port()
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "OMP_NUM_THREADS": "1", "TMPDIR": str(tmp)}
    env.pop("GPT2_API_KEY", None)
    cmd = [sys.executable, "-m", "gpt2", "serve", *args, "--port", str(port), "--device", "cpu"]
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=REPO)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 150
    while True:
        if proc.poll() is not None:
            pytest.fail(f"gpt2 serve exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url + ready_path, timeout=2):
                return proc, url
        except OSError:
            pass
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"gpt2 serve did not answer within 150 s:\n{log.read_text()[-3000:]}")
        time.sleep(0.3)


def stop_server(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> str:
    torch.manual_seed(0)
    return str(save_model(tmp_path_factory.mktemp("api") / "tiny", GPT(GPTConfig.named("tiny"))))


@pytest.fixture(scope="module")
def server(checkpoint, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("serve")
    proc, url = start_server(["--model", checkpoint, "--no-ui", "--api-key", KEY], tmp / "serve.log", "/health", tmp)
    assert len(list(tmp.glob("gpt2-serve-*"))) == 1  # the server's private temp dir (Gradio's files)...
    yield url
    stop_server(proc)
    assert proc.returncode is not None and not list(tmp.glob("gpt2-serve-*"))  # ...is gone after SIGTERM


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server + "/v1", api_key=KEY, max_retries=0, timeout=120)


def test_greedy_completion_equals_gpt2_sample(client, checkpoint, capsys):
    response = client.completions.create(model="tiny", prompt=PROMPT, max_tokens=24, temperature=0)
    assert (
        main(["sample", "--model", checkpoint, "--prompt", PROMPT, "--max-new-tokens", "24", "--temperature", "0"]) == 0
    )
    expected = capsys.readouterr().out
    assert expected.endswith("\n")
    assert PROMPT + response.choices[0].text == expected[:-1]
    assert response.choices[0].finish_reason == "length"
    assert response.usage.completion_tokens == 24 and response.usage.prompt_tokens == 5
    assert response.object == "text_completion" and response.id.startswith("cmpl-")


def test_seeded_draw_equals_gpt2_sample_and_top_k_is_accepted(client, checkpoint, capsys):
    kwargs = dict(model="tiny", prompt=PROMPT, max_tokens=16, temperature=0.9, top_p=0.9, seed=42)
    text = client.completions.create(**kwargs, extra_body={"top_k": 40}).choices[0].text  # top_k: our extension
    options = ["--max-new-tokens", "16", "--temperature", "0.9", "--top-p", "0.9", "--top-k", "40", "--seed", "42"]
    assert main(["sample", "--model", checkpoint, "--prompt", PROMPT, *options]) == 0
    assert capsys.readouterr().out == PROMPT + text + "\n"
    other_k = client.completions.create(**kwargs, extra_body={"top_k": 1}).choices[0].text
    assert other_k == client.completions.create(**{**kwargs, "temperature": 0}).choices[0].text  # top-1 = greedy


def test_streaming_yields_the_same_text_in_chunks(client):
    whole = client.completions.create(model="tiny", prompt=PROMPT, max_tokens=24, temperature=0).choices[0].text
    chunks = list(client.completions.create(model="tiny", prompt=PROMPT, max_tokens=24, temperature=0, stream=True))
    pieces = [c.choices[0].text for c in chunks]
    assert len([p for p in pieces if p]) > 3 and "".join(pieces) == whole
    assert chunks[-1].choices[0].finish_reason == "length"


def test_n3_with_a_seed_is_reproducible(client):
    def ask():
        kwargs = dict(model="tiny", prompt=PROMPT, max_tokens=16, temperature=1.0, top_p=0.9, n=3, seed=42)
        return [c.text for c in sorted(client.completions.create(**kwargs).choices, key=lambda c: c.index)]

    first = ask()
    assert ask() == first and len(set(first)) == 3


def test_prompt_list_echo_stop_and_logprobs(client):
    response = client.completions.create(
        model="tiny", prompt=["Hello", PROMPT], max_tokens=8, temperature=0, echo=True, logprobs=2
    )
    assert [c.index for c in response.choices] == [0, 1]
    assert response.choices[1].text.startswith(PROMPT)
    logprobs = response.choices[1].logprobs
    assert logprobs.token_logprobs[0] is None  # the first prompt token has no context
    assert len(logprobs.tokens) == 5 + 8 and all(lp < 0 for lp in logprobs.token_logprobs[1:])
    assert "".join(logprobs.tokens) == response.choices[1].text
    # a stop string cuts the text just before it
    text = client.completions.create(model="tiny", prompt=PROMPT, max_tokens=24, temperature=0).choices[0].text
    stop = text[6:9]
    cut = client.completions.create(model="tiny", prompt=PROMPT, max_tokens=24, temperature=0, stop=[stop])
    assert cut.choices[0].text == text[: text.index(stop)] and cut.choices[0].finish_reason == "stop"


def test_wrong_or_missing_key_gets_401(server):
    for key in ("wrong", ""):
        bad = openai.OpenAI(base_url=server + "/v1", api_key=key or "x", max_retries=0)
        if not key:
            bad = openai.OpenAI(
                base_url=server + "/v1", api_key="x", max_retries=0, default_headers={"Authorization": ""}
            )
        with pytest.raises(openai.AuthenticationError) as info:
            bad.completions.create(model="tiny", prompt="Hi", max_tokens=2)
        assert info.value.status_code == 401 and "API key" in info.value.body["message"]
    with urllib.request.urlopen(server + "/health") as response:  # the health check needs no key
        assert json.load(response)["status"] == "ok"


def _post(url: str, data: bytes, headers: dict) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=data, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc)


@pytest.mark.parametrize(
    "change, param, message",
    [
        ({"max_tokens": -1}, "max_tokens", "max_tokens must be between 1 and 512, got -1"),
        ({"temperature": float("nan")}, "temperature", "temperature must be a number, got nan"),
        ({"temperature": 1e-300}, "temperature", "temperature must be 0 (greedy) or at least 0.01"),
        ({"top_p": 2}, "top_p", "top_p must be between 0.0 and 1.0, got 2"),
        ({"prompt": "x" * 1_000_000}, "prompt", "the prompt has 1000000 characters; the limit is 4000"),
        ({"n": 1000}, "n", "n must be between 1 and 4, got 1000"),
        ({"seed": "abc"}, "seed", "seed must be an integer"),
        ({"max_tokens": "8"}, "max_tokens", "max_tokens must be an integer, got '8'"),
        ({"top_k": 0.5}, "top_k", "top_k must be an integer"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop", "at most 4"),
    ],
)
def test_bad_parameters_get_400_with_a_message(client, server, change, param, message):
    kwargs = {"model": "tiny", "prompt": "Hi", "max_tokens": 4, **change}
    if change.get("temperature") != change.get("temperature"):  # NaN: the openai client refuses to send it
        headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
        status, body = _post(server + "/v1/completions", json.dumps(kwargs).encode(), headers)
        error = body["error"]
    else:
        with pytest.raises(openai.BadRequestError) as info:
            client.completions.create(model="tiny", prompt="Hi", extra_body=kwargs)
        status, error = info.value.status_code, info.value.body
    assert status == 400 and error["type"] == "invalid_request_error"
    assert error["param"] == param and message in error["message"] and "Traceback" not in error["message"]


def test_twenty_concurrent_streaming_clients_all_complete(client):
    def ask(i: int) -> tuple[str, str | None]:
        stream = client.completions.create(model="tiny", prompt=f"{PROMPT} {i}", max_tokens=12, stream=True, seed=i)
        chunks = list(stream)
        return "".join(c.choices[0].text for c in chunks), chunks[-1].choices[0].finish_reason

    start = time.monotonic()
    with ThreadPoolExecutor(max_workers=20) as pool:
        answers = list(pool.map(ask, range(20)))
    assert time.monotonic() - start < 120
    assert len(answers) == 20 and all(reason in ("stop", "length") for _, reason in answers)
    assert sum(bool(text) for text, _ in answers) >= 18  # a sample may end at once with <|endoftext|>


def test_oversized_body_is_rejected_before_it_is_read_and_uploads_are_refused(server):
    # Only the headers of a 100 MB body are sent: the answer comes without the server waiting for the body.
    host, port = server.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as conn:
        head = f"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: {100 * 2**20}\r\n\r\n"
        conn.sendall(head.encode() + b"{" * 1000)
        reply = b""
        while b"request body over" not in reply and (data := conn.recv(65536)):
            reply += data
        reply = reply.decode()
    assert reply.startswith("HTTP/1.1 413") and "request body over" in reply
    auth = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    status, body = _post(server + "/v1/completions", b"{not json", auth)
    assert status == 400 and "not valid JSON" in body["error"]["message"]
    status, body = _post(server + "/gradio_api/upload", b"x" * 1000, {"Content-Type": "multipart/form-data"})
    assert status == 403 and "uploads are disabled" in body["error"]["message"]


def test_models_lists_the_served_model(client):
    assert [m.id for m in client.models.list().data] == ["tiny"]


def test_public_host_without_key_warns(capsys, monkeypatch):
    import uvicorn

    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: None)  # stop before binding a public address
    monkeypatch.delenv("GPT2_API_KEY", raising=False)
    assert main(["serve", "--host", "0.0.0.0", "--no-ui"]) == 0
    assert "warning: serving on 0.0.0.0 without --api-key" in capsys.readouterr().err
    monkeypatch.setenv("GPT2_API_KEY", "from-the-environment")  # the key can come from the environment
    assert main(["serve", "--host", "0.0.0.0", "--no-ui"]) == 0
    assert "warning" not in capsys.readouterr().err
    assert main(["serve", "--api-key", " ", "--no-ui"]) == 1
    assert capsys.readouterr().err.strip() == "error: --api-key (or $GPT2_API_KEY) is empty"
