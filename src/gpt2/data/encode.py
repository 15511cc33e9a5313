"""Documents → GPT-2 token arrays, in parallel, in input order.

Each document becomes ``[EOT] + encode_ordinary(text)`` as a uint16 array (EOT = 50256 *precedes*
every document, as in build-nanogpt's ``fineweb.py``). Encoding runs in a thread pool: tiktoken's
Rust core releases the GIL while it encodes, and ``encode_to_numpy`` hands back a buffer instead of
a Python list of ints, so threads scale without pickling text to worker processes. Chunks are
mapped in order (``ThreadPoolExecutor.map``), so the output is identical whatever the worker count.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np

from gpt2.tokenizer import EOT_ID, get_tokenizer

DocItem = tuple[int, str]  # (index in the source, text)


def default_workers() -> int:
    """Worker threads to use by default: the CPU cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def encode_document(text: str) -> np.ndarray:
    """``[EOT] + encode_ordinary(text)`` as uint16 (special-token strings in ``text`` are plain text)."""
    encoding = get_tokenizer().encoding
    try:
        ids = encoding.encode_to_numpy(text, disallowed_special=())
    except UnicodeEncodeError:
        # Lone surrogates (possible in JSON strings) cannot be UTF-8 encoded; replace them the way
        # tiktoken's encode_ordinary does, so both paths give the same tokens.
        text = text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
        ids = encoding.encode_to_numpy(text, disallowed_special=())
    out = np.empty(len(ids) + 1, dtype=np.uint16)
    out[0] = EOT_ID
    out[1:] = ids
    return out


def _encode_chunk(chunk: list[DocItem]) -> list[tuple[int, np.ndarray]]:
    return [(index, encode_document(text)) for index, text in chunk]


def _chunks(items: Iterable[DocItem], chunk_chars: int) -> Iterator[list[DocItem]]:
    """Consecutive runs of documents holding about ``chunk_chars`` characters each (at least one document).

    If reading ``items`` fails (bad input line, Ctrl-C), the documents read before the failure are still
    yielded as a last chunk — so they get written — and the error is raised on the next call.
    """
    chunk: list[DocItem] = []
    size = 0
    try:
        for item in items:
            chunk.append(item)
            size += len(item[1])
            if size >= chunk_chars:
                yield chunk
                chunk, size = [], 0
    except GeneratorExit:  # the consumer stopped early: nothing more to yield
        raise
    except BaseException:
        if chunk:
            yield chunk
        raise
    if chunk:
        yield chunk


def encode_documents(
    items: Iterable[DocItem], workers: int | None = None, chunk_chars: int = 1 << 16, prefetch_chunks: int = 4
) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(index, tokens)`` for each ``(index, text)`` of ``items``, in input order.

    ``workers`` threads each encode a chunk of ≈``chunk_chars`` characters per task, with at most
    ``workers * prefetch_chunks`` chunks in flight (bounded memory on an endless stream). An error
    while reading ``items`` is raised only after every document read before it has been yielded.
    """
    workers = workers or default_workers()
    get_tokenizer()  # build the tokenizer once, before the threads race to do it
    if workers == 1:
        for index, text in items:
            yield index, encode_document(text)
        return
    chunks = _chunks(items, chunk_chars)
    pending: deque[Future] = deque()
    failure: BaseException | None = None
    with ThreadPoolExecutor(workers) as pool:

        def refill() -> None:
            nonlocal failure
            while failure is None and len(pending) < workers * prefetch_chunks:
                try:
                    chunk = next(chunks)
                except StopIteration:
                    return
                except BaseException as exc:  # re-raised after the pending chunks are yielded
                    failure = exc
                    return
                pending.append(pool.submit(_encode_chunk, chunk))

        try:
            refill()
            while pending:
                done = pending.popleft().result()
                refill()
                yield from done
        finally:  # stopped early (e.g. --max-tokens reached): drop the queued work
            for future in pending:
                future.cancel()
    if failure is not None:
        raise failure
