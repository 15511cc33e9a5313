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


def test_fineweb_edu_through_local_stand_in(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    # Same schema as the Hub's FineWeb-Edu parquet files (text + metadata columns).
    pq.write_table(pa.table({"text": ["edu one", "edu two"], "score": [3.1, 4.2]}), tmp_path / "000.parquet")
    write_jsonl(tmp_path / "001.jsonl", [{"text": "edu three", "score": 2.9}])
    assert list(sources.fineweb_edu_documents(data_files=[tmp_path / "000.parquet"])) == ["edu one", "edu two"]
    assert list(sources.fineweb_edu_documents(data_files=[tmp_path / "001.jsonl"])) == ["edu three"]
    with pytest.raises(GPT2Error, match="all .parquet or all .jsonl"):
        list(sources.fineweb_edu_documents(data_files=[tmp_path / "000.parquet", tmp_path / "001.jsonl"]))


def test_demo_corpus_is_the_38_plays_as_plain_text():
    plays = demo_play_files()
    assert len(plays) == 38
    assert [p.name for p in plays].count("hamlet.md") == 1
    documents = list(demo_documents())
    assert documents[0].startswith("A Midsummer Night's Dream\n\nACT I")
    assert all("**" not in doc and not doc.startswith("#") for doc in documents)
    assert sum(len(doc) for doc in documents) > 4_500_000


def test_markdown_play_conversion():
    markdown = "# Hamlet\n\n## ACT I\n\n_Enter Ghost_\n\n**BERNARDO**  \nWho's there?  \nNay.\n"
    assert markdown_play_to_text(markdown) == "Hamlet\n\nACT I\n\nEnter Ghost\n\nBERNARDO:\nWho's there?\nNay.\n"
