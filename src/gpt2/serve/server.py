"""The ``gpt2 serve`` server: one FastAPI app with the API routes and the Gradio page mounted on it.

Why FastAPI: Gradio 6 *is* a FastAPI app, so mounting the page with ``gr.mount_gradio_app`` on our own
FastAPI app gives one port, one process and one event loop for the browser and the API, and both share
the one model and batching engine; a second framework (or a second server) would load the model twice
or need a bridge between them. uvicorn runs it, as Gradio itself does.

Hardening that applies to every route, the page's included (issue 19):

* request bodies are capped at :data:`MAX_BODY_BYTES` by an ASGI wrapper *before* they are read
  (413 for a larger ``Content-Length``, or as soon as a chunked body passes the cap), so a 100 MB POST
  never reaches memory;
* Gradio's ``/gradio_api/upload`` is refused (403): the page has no file input, and Gradio would store
  any upload in its temp dir; that dir is private to the process and deleted when the server stops.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gpt2.errors import GPT2Error

MAX_BODY_BYTES = 2 * 1024 * 1024  # a 4000-character prompt is ~16 KB of JSON; 1 MB prompts still get a 400
LOOPBACK = ("127.0.0.1", "localhost", "::1")


class BodyLimit:
    """ASGI middleware: reject request bodies over ``limit`` bytes with 413, counting before the app reads."""

    def __init__(self, app: Any, limit: int = MAX_BODY_BYTES):
        self.app, self.limit = app, limit

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        if scope["path"].rstrip("/").endswith("/gradio_api/upload"):
            return await _reply(send, 403, "file uploads are disabled on this server")
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            return await _reply(send, 413, f"request body over {self.limit} bytes")
        received = 0
        replied = False

        async def limited_receive() -> dict:
            nonlocal received, replied
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit and not replied:
                    replied = True  # answer now and let the app see a disconnect, so it stops reading
                    await _reply(send, 413, f"request body over {self.limit} bytes")
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: dict) -> None:
            if not replied:  # after our 413 the app's own (error) response is dropped
                await send(message)

        await self.app(scope, limited_receive, guarded_send)


async def _reply(send: Any, status: int, message: str) -> None:
    import json

    kind = "invalid_request_error"
    body = json.dumps({"error": {"message": message, "type": kind, "param": None, "code": None}}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def load_for_serving(spec: str | None, device: str, dtype: str, quantize: str | None) -> tuple[Any | None, str]:
    """(model, "") or (None, reason): the server must come up (with its how-to page) even without a model."""
    if not spec:
        return None, ""
    from gpt2.quantize import prepare_model
    from gpt2.runtime.device import resolve_device
    from gpt2.store.load import load

    try:
        model = load(spec, device=resolve_device(device))
    except (GPT2Error, OSError, ValueError, RuntimeError) as exc:  # any unloadable file: a page that says why
        return None, str(exc) if isinstance(exc, GPT2Error) else f"{type(exc).__name__}: {exc}"
    return prepare_model(model, dtype, quantize), ""


def build_server(
    model_spec: str | None,
    *,
    device: str = "cpu",
    dtype: str = "fp32",
    quantize: str | None = None,
    api_key: str | None = None,
    ui: bool = True,
    on_shutdown: Callable[[], None] | None = None,
) -> Any:
    """The ASGI app: API routes, the Gradio page at ``/`` (unless ``ui`` is False), the body-size cap.
    ``on_shutdown`` runs when the server stops (the app's lifespan end), after the engine is closed."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    from fastapi import FastAPI

    from gpt2.serve.api import CompletionService, add_api_routes
    from gpt2.serve.engine import Engine

    model, problem = load_for_serving(model_spec, device, dtype, quantize)
    engine = Engine(model) if model is not None else None
    model_id = Path(model_spec.rstrip("/")).name if model_spec else "none"
    service = CompletionService(engine, model_id) if engine is not None else None
    # No /docs or /openapi.json: the interactive docs pull scripts from a CDN, and the API is documented
    # in docs/generation.md.

    @contextlib.asynccontextmanager
    async def lifespan(app: Any):
        # The clean-up runs here, not after uvicorn.run(): on SIGTERM uvicorn shuts the app down and then
        # re-raises the signal, which ends the process before any code after run() or an atexit hook.
        try:
            yield
        finally:
            if engine is not None:
                engine.close()
            if on_shutdown is not None:
                on_shutdown()

    app = FastAPI(title="gpt2-from-scratch", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    add_api_routes(app, service, api_key, problem)  # registered before the page, so they win over its mount
    if ui:
        import gradio as gr

        from gpt2.serve.ui import CONCURRENCY_LIMIT, QUEUE_SIZE, build_app

        demo = build_app(model_spec, engine, problem)
        demo.queue(default_concurrency_limit=CONCURRENCY_LIMIT, max_size=QUEUE_SIZE)
        # System fonts only: the default theme would fetch Google Fonts, which an offline machine cannot.
        theme = gr.themes.Default(font=["system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"])
        app = gr.mount_gradio_app(app, demo, path="/", ssr_mode=False, show_error=False, theme=theme)
    return BodyLimit(app)


def serve(
    model_spec: str | None,
    *,
    host: str = "127.0.0.1",
    port: int = 7860,
    device: str = "auto",
    dtype: str = "fp32",
    quantize: str | None = None,
    api_key: str | None = None,
    ui: bool = True,
) -> None:
    """Build the server and run it with uvicorn until interrupted."""
    if not 1 <= port <= 65535:
        raise GPT2Error(f"--port must be in [1, 65535], got {port}")
    if api_key is not None and not api_key.strip():
        raise GPT2Error("--api-key (or $GPT2_API_KEY) is empty")
    if host not in LOOPBACK and api_key is None:
        print(
            f"warning: serving on {host} without --api-key: anyone who can reach this address can use the API",
            file=sys.stderr,
        )
    # Gradio's files (cached example outputs; uploads are refused) go to a private dir removed at exit.
    temp_dir = tempfile.mkdtemp(prefix="gpt2-serve-")
    os.environ["GRADIO_TEMP_DIR"] = temp_dir
    remove_temp = lambda: shutil.rmtree(temp_dir, ignore_errors=True)
    try:
        import uvicorn

        app = build_server(
            model_spec, device=device, dtype=dtype, quantize=quantize, api_key=api_key, ui=ui, on_shutdown=remove_temp
        )
        where = f"http://{host}:{port}" if ":" not in host else f"http://[{host}]:{port}"
        print(f"serving on {where}  (API: {where}/v1, {'page: ' + where + '/' if ui else 'no web page'})", flush=True)
        uvicorn.run(app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=5)
    finally:
        remove_temp()  # also when start-up failed (the lifespan never ran)
