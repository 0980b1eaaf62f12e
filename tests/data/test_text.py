"""hfgrow.data.text: the one reader of local .txt/.md/.jsonl/.parquet (and .gz) files."""

from __future__ import annotations

import doctest
import gzip
import json
import re
import sys

import pytest

from hfgrow.data import text
from hfgrow.errors import HfgrowError
from hfgrow.data.text import (
    TEXT_SUFFIXES,
    DocPart,
    DocRest,
    file_kind,
    iter_documents,
    iter_documents_from,
    iter_jsonl_from,
    iter_parquet_from,
    iter_txt_from,
    list_files,
    read_documents,
)
from helpers.errors import raises


def jsonl(*records) -> str:
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records)


def test_doctests():
    result = doctest.testmod(text)
    assert result.failed == 0 and result.attempted >= 2


def test_suffixes_and_kinds():
    assert TEXT_SUFFIXES == (
        ".txt", ".md", ".text", ".jsonl", ".ndjson", ".parquet",
        ".txt.gz", ".md.gz", ".text.gz", ".jsonl.gz", ".ndjson.gz",
    )
    kinds = {name: file_kind(name) for name in [
        "a.txt", "B.TXT", "c.md", "d.text", "e.txt.gz", "f.MD.GZ", "g.jsonl", "h.ndjson", "i.jsonl.gz",
        "j.parquet", "k.Parquet", "l.parquet.gz", "m.csv", "n.gz", "o.json", "txt",
    ]}
    assert kinds == {
        "a.txt": "txt", "B.TXT": "txt", "c.md": "txt", "d.text": "txt", "e.txt.gz": "txt", "f.MD.GZ": "txt",
        "g.jsonl": "jsonl", "h.ndjson": "jsonl", "i.jsonl.gz": "jsonl",
        "j.parquet": "parquet", "k.Parquet": "parquet",
        "l.parquet.gz": None, "m.csv": None, "n.gz": None, "o.json": None, "txt": None,
    }
    assert all(file_kind("x" + suffix) for suffix in TEXT_SUFFIXES)


def test_list_files_sorted_recursive_skips_hidden_and_unsupported(tmp_path):
    for rel in ["b.txt", "a/z.jsonl", "a/y.md.gz", "c.parquet", "notes.csv", ".hidden.txt", ".git/x.txt", "a/.cache/d.txt"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"")
    assert [p.relative_to(tmp_path).as_posix() for p in list_files(tmp_path)] == [
        "a/y.md.gz", "a/z.jsonl", "b.txt", "c.parquet",
    ]
    assert list_files(tmp_path / "b.txt") == [tmp_path / "b.txt"]
    hidden_root = tmp_path / ".git"  # a hidden folder given explicitly is read
    assert list_files(hidden_root) == [hidden_root / "x.txt"]


def test_list_files_errors(tmp_path):
    (tmp_path / "notes.csv").write_text("a,b\n")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "data.csv").write_text("a,b\n")
    with raises(f"data file or folder '{tmp_path / 'missing.txt'}' does not exist."):
        list_files(tmp_path / "missing.txt")
    with raises(
        f"unknown file type '{tmp_path / 'notes.csv'}': use .txt/.md/.text, .jsonl/.ndjson, .parquet "
        "or .gz of the text and JSON-lines types, or a folder of them."
    ):
        list_files(tmp_path / "notes.csv")
    with raises(
        f"folder '{tmp_path / 'empty'}' holds no .txt/.md/.text, .jsonl/.ndjson, .parquet "
        "or .gz of the text and JSON-lines types files."
    ):
        list_files(tmp_path / "empty")
    with pytest.raises(HfgrowError, match="^unknown file type"):
        list(iter_documents(tmp_path / "notes.csv"))


def test_txt_is_one_document_read_exactly(tmp_path):
    body = "first line\r\nsecond line\n\n  indented — ünïcode\n"
    (tmp_path / "a.txt").write_bytes(body.encode())
    (tmp_path / "b.md").write_text("# Title\n")
    with gzip.open(tmp_path / "c.TXT.GZ", "wb") as f:
        f.write(body.encode())
    (tmp_path / "empty.txt").write_bytes(b"")
    (tmp_path / "bad-utf8.text").write_bytes(b"ok \xff end")
    assert list(iter_documents(tmp_path / "a.txt")) == [body]  # line endings kept as they are
    assert list(iter_documents(tmp_path / "b.md")) == ["# Title\n"]
    assert list(iter_documents(tmp_path / "c.TXT.GZ")) == [body]
    assert list(iter_documents(tmp_path / "empty.txt")) == []
    assert list(iter_documents(tmp_path / "bad-utf8.text")) == ["ok \ufffd end"]
    assert read_documents(tmp_path) == [body, "# Title\n", "ok \ufffd end", body]  # sorted; empty.txt adds nothing


def test_txt_pieces_are_docparts_that_join_to_the_file(tmp_path):
    body = "".join(f"line {i} of the file\n" for i in range(400))
    (tmp_path / "a.txt").write_text(body)
    pieces = list(iter_documents(tmp_path / "a.txt", piece_bytes=100))
    assert len(pieces) > 10 and "".join(pieces) == body
    # all but the last go on in the next (DocPart: no EOS), all but the first go on from the previous (DocRest:
    # no BOS); the middle ones are both
    assert type(pieces[0]) is DocPart and type(pieces[-1]) is DocRest
    assert all(isinstance(p, DocPart) and isinstance(p, DocRest) for p in pieces[1:-1])
    assert all(p.endswith("\n") for p in pieces)  # cut right after a newline


def test_jsonl_documents(tmp_path):
    content = jsonl({"text": "one"}, "", {"text": ""}, {"text": "two\nlines", "id": 3}, "   ", {"body": "ü", "text": "x"})
    (tmp_path / "a.jsonl").write_text(content)
    with gzip.open(tmp_path / "b.ndjson.gz", "wt") as f:
        f.write(content)
    (tmp_path / "c.jsonl").write_text(jsonl({"body": "ü"}, {"body": "v"}))
    assert read_documents(tmp_path / "a.jsonl") == ["one", "two\nlines", "x"]
    assert read_documents(tmp_path / "b.ndjson.gz") == ["one", "two\nlines", "x"]
    assert read_documents(tmp_path / "c.jsonl", text_field="body") == ["ü", "v"]


def test_jsonl_offsets_resume(tmp_path):
    lines = [json.dumps({"text": t}) + "\n" for t in ["a", "", "bb", "ccc"]]
    (tmp_path / "a.jsonl").write_text("".join(lines))
    with gzip.open(tmp_path / "a.jsonl.gz", "wt") as f:
        f.write("".join(lines))
    ends = [sum(len(line) for line in lines[: i + 1]) for i in range(len(lines))]
    for name in ["a.jsonl", "a.jsonl.gz"]:
        path = tmp_path / name
        assert list(iter_jsonl_from(path)) == [("a", ends[0]), ("bb", ends[2]), ("ccc", ends[3])]
        assert list(iter_jsonl_from(path, ends[0])) == [("bb", ends[2]), ("ccc", ends[3])]
        assert list(iter_jsonl_from(path, ends[3])) == []


@pytest.mark.parametrize(
    "line, problem",
    [
        ("{not json", "is not valid JSON (Expecting property name enclosed in double quotes)"),
        ('{"txt": "no"}', 'has no "text" field'),
        ('["text"]', 'has no "text" field'),
        ('{"text": 3}', 'has a "text" field that is not a string'),
        (b'{"text": "\xff"}', "is not valid JSON (invalid UTF-8)"),
    ],
)
def test_jsonl_errors_name_file_and_line(tmp_path, line, problem):
    path = tmp_path / "bad.jsonl"
    raw = line if isinstance(line, bytes) else line.encode()
    path.write_bytes(b'{"text": "ok"}\n\n' + raw + b"\n")
    with raises(f"{path}:3 {problem}."):
        read_documents(path)
    with raises(f"{path}:3 {problem}."):  # the line number is right after a resume too
        list(iter_jsonl_from(path, len(b'{"text": "ok"}\n')))


def write_parquet(path, columns, row_group_size=None):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    pq.write_table(pa.table(columns), path, row_group_size=row_group_size)


def test_parquet_documents_and_resume(tmp_path):
    path = tmp_path / "d.parquet"
    texts = ["one", None, "", "four", "five", "six", "seven"]
    write_parquet(path, {"text": texts, "body": [f"b{i}" for i in range(7)]}, row_group_size=3)
    assert read_documents(path) == ["one", "four", "five", "six", "seven"]
    assert read_documents(path, text_field="body") == [f"b{i}" for i in range(7)]
    assert list(iter_parquet_from(path)) == [("one", 1), ("four", 4), ("five", 5), ("six", 6), ("seven", 7)]
    for row in range(8):  # every start row, inside and across row groups
        assert list(iter_parquet_from(path, row)) == [(t, i + 1) for i, t in enumerate(texts) if i >= row and t]
    small = list(iter_parquet_from(path, 2, batch_rows=2))
    assert small == [("four", 4), ("five", 5), ("six", 6), ("seven", 7)]


def test_parquet_errors(tmp_path, monkeypatch):
    path = tmp_path / "d.parquet"
    write_parquet(path, {"content": ["x"], "n": [1]})
    with raises(f"'{path}' has no 'text' column (columns: content, n)."):
        read_documents(path)
    with raises(f"'{path}' column 'n' holds int values, not text."):
        read_documents(path, text_field="n")
    fake = tmp_path / "fake.parquet"
    fake.write_text("not parquet at all")
    with pytest.raises(HfgrowError, match=f"^{re.escape(repr(str(fake)))} is not a readable parquet file \\(.+\\)\\.$"):
        read_documents(fake)
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    with raises(f"reading '{path}' needs pyarrow: pip install pyarrow."):
        read_documents(path)


# --------------------------------------------------------------------------- resumable plain text


def test_txt_pieces_resume_from_every_offset_and_join_to_the_file(tmp_path):
    # multi-byte characters next to the separators, a CRLF stretch (never cut inside), a long run
    # without any space (the cut-anywhere fallback must not split a UTF-8 character)
    body = "".join(f"línea {i} — ünïcode\n" for i in range(60)) + "x\r\ny " * 30 + "é" * 700 + "\nend"
    path = tmp_path / "a.txt"
    path.write_bytes(body.encode())
    raw = body.encode()
    pieces = list(iter_txt_from(path, 0, piece_bytes=8))
    assert len(pieces) > 20 and "".join(t for t, _ in pieces) == body
    assert all(isinstance(t, DocPart) for t, _ in pieces[:-1]) and not isinstance(pieces[-1][0], DocPart)
    assert all(isinstance(t, DocRest) for t, _ in pieces[1:]) and not isinstance(pieces[0][0], DocRest)
    assert [off for _, off in pieces] == [len("".join(t for t, _ in pieces[: k + 1]).encode()) for k in range(len(pieces))]
    assert pieces[-1][1] == len(raw)
    for k, (_, offset) in enumerate(pieces[:-1]):  # resuming after any piece gives the rest of the file
        rest = "".join(t for t, _ in iter_txt_from(path, offset, piece_bytes=8))
        assert rest == raw[offset:].decode()
    with gzip.open(tmp_path / "a.txt.gz", "wb") as f:
        f.write(raw)
    assert list(iter_txt_from(tmp_path / "a.txt.gz", 0, piece_bytes=8)) == pieces  # offsets in uncompressed bytes


def test_txt_cuts_only_at_a_single_separator_between_non_spaces(tmp_path):
    # independent check of the cut rule on the decoded text (str.isspace): a cut is right after a
    # newline or right before a space, with a non-space character on both sides. The text offers
    # tempting wrong places: "\n" before U+3000 (a 3-byte space), "\n\n" runs, "  " runs.
    body = "".join(f"w{i}\n\u3000z{i}  q\n\nr{i}\n" for i in range(300))
    (tmp_path / "t.txt").write_text(body)
    texts = [t for t, _ in iter_txt_from(tmp_path / "t.txt", 0, piece_bytes=16)]
    assert len(texts) > 10 and "".join(texts) == body
    at, after_newline = 0, 0
    for piece in texts[:-1]:
        at += len(piece)
        if piece.endswith("\n"):
            left, right = body[at - 2], body[at]
            after_newline += 1
        else:
            assert body[at] == " ", repr(body[at - 3 : at + 3])
            left, right = body[at - 1], body[at + 1]
        assert not left.isspace() and not right.isspace(), repr(body[at - 3 : at + 3])
    assert after_newline > 5


def test_iter_documents_from_picks_the_reader(tmp_path):
    (tmp_path / "a.txt").write_text("one text\n")
    (tmp_path / "b.jsonl").write_text(jsonl({"text": "x"}, {"text": "y"}))
    write_parquet(tmp_path / "c.parquet", {"text": ["p", "q"]})
    assert list(iter_documents_from(tmp_path / "a.txt")) == [("one text\n", 9)]
    assert list(iter_documents_from(tmp_path / "b.jsonl", 14)) == [("y", 28)]
    assert list(iter_documents_from(tmp_path / "c.parquet", 1)) == [("q", 2)]
    with pytest.raises(HfgrowError, match="^unknown file type"):
        list(iter_documents_from(tmp_path / "d.csv"))
