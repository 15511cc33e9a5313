"""The OpenAI-compatible completions API of ``gpt2 serve``: ``POST /v1/completions``, ``GET /v1/models``,
``GET /health``.

Requests are parsed by hand rather than by a pydantic model so that every bad value gets OpenAI's error
shape — HTTP 400 with ``{"error": {"message", "type", "param", "code"}}`` naming the parameter — and never
FastAPI's own 422 format or a stack trace. The sampling options are checked, like the web page's, by
:class:`gpt2.generate.sampling.SamplingOptions` within its ``SERVED`` limits; its errors are mapped to OpenAI's
names (``max_tokens``, ``n``). ``top_k`` is accepted as an extension. Every generation goes through the shared
engine (:mod:`gpt2.serve.engine`).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.exceptions import HTTPException

from gpt2.errors import GPT2Error
from gpt2.generate.sampling import SERVED, SamplingOptions, check_prompt

MAX_PROMPTS = 8  # prompts in one request (a list); each gets n choices
MAX_LOGPROBS = 5  # alternatives per token in `top_logprobs`, as OpenAI allows
MAX_IN_FLIGHT = 64  # requests being generated or waiting; more get 429 (the web page's queue size)
DEFAULT_MAX_TOKENS = 16  # OpenAI's default
IGNORED = {"model", "user", "suffix"}  # accepted and ignored (one model per server; suffix must be null)
ZERO_ONLY = ("presence_penalty", "frequency_penalty")  # accepted only at their neutral value
OPENAI_NAMES = {"max_new_tokens": "max_tokens", "num_samples": "n"}  # SamplingOptions' names -> the API's


class APIError(Exception):
    """An error answered in OpenAI's shape: ``status`` HTTP code, ``message``, ``param`` (the field), ``code``."""

    def __init__(self, message: str, param: str | None = None, status: int = 400, kind: str = "invalid_request_error"):
        super().__init__(message)
        self.message, self.param, self.status, self.kind = message, param, status, kind
        self.code = None if status == 400 else {401: "invalid_api_key", 429: "rate_limit_exceeded"}.get(status)

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}


@dataclass
class Completion:
    """A validated ``/v1/completions`` request."""

    prompts: list[str]
    options: SamplingOptions
    stream: bool
    echo: bool
    logprobs: int | None


def parse_completion(body: Any) -> Completion:
    """Validate a request body (already JSON-decoded); :class:`APIError` names the first bad parameter."""
    if not isinstance(body, dict):
        raise APIError("the request body must be a JSON object")
    known = {"prompt", "max_tokens", "temperature", "top_p", "top_k", "n", "stop", "seed", "stream", "echo"}
    for key in body:
        if key not in known | {"logprobs", "best_of"} | IGNORED | set(ZERO_ONLY):
            raise APIError(f"unknown parameter {key!r}", str(key))
    for key in ZERO_ONLY:
        if body.get(key) not in (None, 0, 0.0):
            raise APIError(f"{key} is not supported (only 0)", key)
    if body.get("suffix") is not None:
        raise APIError("suffix is not supported", "suffix")
    get = lambda name, default=None: default if body.get(name) is None else body[name]  # null: the default
    prompts = [get("prompt", "")] if isinstance(get("prompt", ""), str) else body["prompt"]
    if not isinstance(prompts, list) or not prompts or not all(isinstance(p, str) for p in prompts):
        raise APIError("prompt must be a string or a non-empty list of strings", "prompt")
    if len(prompts) > MAX_PROMPTS:
        raise APIError(f"at most {MAX_PROMPTS} prompts per request, got {len(prompts)}", "prompt")
    for flag in ("stream", "echo"):
        if not isinstance(get(flag, False), bool):
            raise APIError(f"{flag} must be true or false", flag)
    logprobs = get("logprobs")
    if logprobs is not None and (type(logprobs) is not int or not 0 <= logprobs <= MAX_LOGPROBS):
        raise APIError(f"logprobs must be an integer between 0 and {MAX_LOGPROBS}, got {logprobs!r}", "logprobs")
    try:
        for p in prompts:
            check_prompt(p, SERVED)
        options = SamplingOptions.from_arguments(
            max_new_tokens=get("max_tokens", DEFAULT_MAX_TOKENS),
            temperature=get("temperature", 1.0),
            top_k=get("top_k"),
            top_p=get("top_p"),
            num_samples=get("n", 1),
            seed=get("seed"),
            stop=get("stop"),
            limits=SERVED,
        )
    except GPT2Error as exc:  # in OpenAI's words: max_tokens, not max_new_tokens
        name = OPENAI_NAMES.get(exc.option, exc.option)
        raise APIError(str(exc).replace(exc.option, name, 1), name) from None
    if get("best_of", options.num_samples) != options.num_samples:
        raise APIError("best_of is not supported (only equal to n)", "best_of")
    return Completion(prompts, options, get("stream", False), get("echo", False), logprobs)


def check_api_key(authorization: str | None, api_key: str | None) -> None:
    """401 unless ``Authorization: Bearer <api_key>`` (no key configured: everything is allowed)."""
    if api_key is None:
        return
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), api_key.encode()):
        raise APIError("invalid or missing API key (send Authorization: Bearer KEY)", status=401)


class Choice:
    """One choice: its text so far, usage and OpenAI's logprobs fields."""

    def __init__(self, index: int, prompt: str, want_logprobs: bool):
        from gpt2.tokenizer import get_tokenizer

        self.tokenizer = get_tokenizer()
        self.index, self.done = index, False
        self.offset = len(prompt)  # text_offset counts from the start of the echoed prompt, as OpenAI does
        self.logprobs: dict[str, list] | None = None
        if want_logprobs:
            self.logprobs = {"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []}
        self.tokens = 0  # completion tokens (usage)
        self.sent = 0  # logprobs entries already streamed

    def add_logprob(self, token: int, logprob: float | None, top: list[tuple[int, float]] | None) -> None:
        if self.logprobs is None:
            return
        piece = self._str(token)
        self.logprobs["tokens"].append(piece)
        self.logprobs["token_logprobs"].append(logprob)
        self.logprobs["top_logprobs"].append(None if top is None else {self._str(t): lp for t, lp in top})
        self.logprobs["text_offset"].append(self.offset)
        self.offset += len(piece)

    def _str(self, token: int) -> str:
        return self.tokenizer.decode_bytes([token]).decode("utf-8", errors="replace")


class CompletionService:
    """Runs validated completions on the engine; one instance per server."""

    def __init__(self, engine: Any, model_id: str):
        from gpt2.tokenizer import get_tokenizer

        self.engine, self.model_id, self.tokenizer = engine, model_id, get_tokenizer()
        self.in_flight = 0

    async def events(self, request: Completion) -> AsyncIterator[tuple[int, str, Choice, str | None]]:
        """(choice index, new text, choice, finish_reason or None) as the engine produces tokens."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        handles, choices, n = [], [], request.options.num_samples
        self.in_flight += 1
        try:
            for p_index, prompt in enumerate(request.prompts):
                echoed, want_logprobs = prompt if request.echo else "", request.logprobs is not None
                choices.append([Choice(p_index * n + j, echoed, want_logprobs) for j in range(n)])
                sink = lambda event, i=p_index: loop.call_soon_threadsafe(queue.put_nowait, (i, event))
                handles.append(
                    self.engine.submit(
                        self.tokenizer.encode(prompt),
                        request.options,
                        sink,
                        logprobs=request.logprobs,
                        prompt_logprobs=request.echo and want_logprobs,
                        on_notice=lambda message: None,
                    )
                )
            if request.echo:
                for p_index, prompt in enumerate(request.prompts):
                    for choice in choices[p_index]:
                        yield choice.index, prompt, choice, None
            async for item in self._drain(queue, handles, choices):
                yield item
        except GPT2Error as exc:
            raise APIError(str(exc)) from None
        finally:
            self.in_flight -= 1
            for handle in handles:
                handle.cancel()  # a client gone mid-stream frees its rows at the next step

    async def _drain(self, queue: asyncio.Queue, handles: list, choices: list[list[Choice]]):
        from gpt2.generate.decode import Finished

        open_groups = len(handles)
        while open_groups:
            p_index, event = await queue.get()
            group = choices[p_index]
            if isinstance(event, Finished):
                open_groups -= 1
                if event.reason == "error":
                    raise APIError(event.message, status=500, kind="server_error")
                for choice in group:
                    # "stop": this sample reached <|endoftext|> or a stop string (or was cancelled);
                    # "length": it was still going when max_tokens ran out.
                    yield choice.index, "", choice, "stop" if choice.done or event.reason == "stop" else "length"
                continue
            if event.prompt:  # the prompt's own logprobs (echo + logprobs): its first token has none
                prompt_ids = handles[p_index].prompt_ids
                for choice in group:
                    choice.offset = 0
                    choice.add_logprob(prompt_ids[0], None, None)
                    for token, lp in zip(event.token_ids, event.logprobs, strict=True):
                        choice.add_logprob(token, lp, None)
                continue
            for j, choice in enumerate(group):
                if choice.done:  # the batch decodes a request's samples in lockstep; this one has ended
                    continue
                choice.tokens, choice.done = choice.tokens + 1, event.done[j]
                if event.logprobs is not None:
                    choice.add_logprob(event.token_ids[j], event.logprobs[j], event.top[j] if event.top else None)
                if event.text[j]:
                    yield choice.index, event.text[j], choice, None

    def envelope(self, request_id: str, created: int, choices: list[dict], **extra: Any) -> dict[str, Any]:
        return {
            "id": request_id,
            "object": "text_completion",
            "created": created,
            "model": self.model_id,
            "choices": choices,
            **extra,
        }

    async def complete(self, request: Completion) -> dict[str, Any]:
        """The whole response of a non-streaming request."""
        texts: dict[int, list[str]] = {}
        finished: dict[int, tuple[Choice, str]] = {}
        async for index, piece, choice, reason in self.events(request):
            texts.setdefault(index, []).append(piece)
            if reason is not None:
                finished[index] = (choice, reason)
        choices = [
            {"text": "".join(texts.get(i, [])), "index": i, "logprobs": c.logprobs, "finish_reason": reason}
            for i, (c, reason) in sorted(finished.items())
        ]
        prompt_tokens = sum(len(self.tokenizer.encode(p)) for p in request.prompts)
        completion_tokens = sum(c.tokens for c, _ in finished.values())
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        }
        return self.envelope(f"cmpl-{uuid.uuid4().hex}", int(time.time()), choices, usage=usage)

    async def stream(self, request: Completion) -> AsyncIterator[bytes]:
        """Server-sent events: one ``data: {chunk}`` per text piece, a final chunk per choice, ``data: [DONE]``."""
        request_id, created = f"cmpl-{uuid.uuid4().hex}", int(time.time())
        try:
            async for index, piece, choice, reason in self.events(request):
                if not piece and reason is None:
                    continue
                logprobs = None
                if choice.logprobs is not None:  # send what accumulated since the last chunk
                    logprobs = {key: values[choice.sent :] for key, values in choice.logprobs.items()}
                    choice.sent = len(choice.logprobs["tokens"])
                chunk = {"text": piece, "index": index, "logprobs": logprobs, "finish_reason": reason}
                yield _sse(self.envelope(request_id, created, [chunk]))
        except APIError as exc:  # the status line is sent already: report the error as an event, as OpenAI does
            yield _sse(exc.body())
        yield b"data: [DONE]\n\n"


def _sse(payload: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(payload).encode() + b"\n\n"


def add_api_routes(app: Any, service: CompletionService | None, api_key: str | None, problem: str = "") -> None:
    """Register the routes and OpenAI-shaped error handlers on the FastAPI ``app`` (``service`` None:
    no model could be loaded; /v1 answers 503 with ``problem``)."""

    @app.exception_handler(APIError)
    async def api_error(request: Request, exc: APIError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return JSONResponse(APIError(str(exc.detail), status=exc.status_code).body(), status_code=exc.status_code)

    def require_model(request: Request) -> CompletionService:
        check_api_key(request.headers.get("authorization"), api_key)
        if service is None:
            raise APIError(f"no model loaded: {problem or 'start gpt2 serve with --model PATH'}", status=503)
        return service

    @app.get("/health")
    async def health() -> JSONResponse:
        body = {"status": "ok" if service else "no model", "model": service.model_id if service else None}
        return JSONResponse(body, status_code=200 if service else 503)

    @app.get("/v1/models")
    async def models(request: Request) -> dict[str, Any]:
        svc = require_model(request)
        card = {"id": svc.model_id, "object": "model", "created": int(time.time()), "owned_by": "gpt2-from-scratch"}
        return {"object": "list", "data": [card]}

    @app.post("/v1/completions")
    async def completions(request: Request):
        svc = require_model(request)
        try:
            body = json.loads(await request.body())
        except (ValueError, UnicodeDecodeError):
            raise APIError("the request body is not valid JSON") from None
        completion = parse_completion(body)
        if svc.in_flight >= MAX_IN_FLIGHT:  # checked before a streamed response has sent its 200
            raise APIError("the server is busy; try again shortly", status=429, kind="rate_limit_error")
        if completion.stream:
            headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
            return StreamingResponse(svc.stream(completion), media_type="text/event-stream", headers=headers)
        return await svc.complete(completion)
