"""hfgrow.data.specs: the one ``[NAME=]PATH|hf:...`` parser, its naming rule, and the one opener of documents."""

from __future__ import annotations

import doctest
import gzip
import json
import re
import sys
import types

import pytest

from hfgrow.data import specs as specs_module
from hfgrow.data.specs import DomainSpec, HFSource, LocalSource, hf_dataset, open_domain, parse_specs
from hfgrow.data.text import DocPart, read_documents
from hfgrow.errors import HfgrowError
from helpers.errors import raises


def jsonl(*texts: str) -> str:
    return "".join(json.dumps({"text": t}) + "\n" for t in texts)


def test_doctests():
    result = doctest.testmod(specs_module)
    assert result.failed == 0 and result.attempted >= 5


# --------------------------------------------------------------------------- naming


# the naming rule written out by hand: a file loses its text-file suffix (".jsonl.gz" counts as
# one), nothing else; a folder keeps its whole name; a dataset gives its last path part
NAMES = {
    "web.jsonl.gz": "web",
    "data/web.jsonl.gz": "web",
    "a.txt": "a",
    "a.b.txt": "a.b",
    "Notes.MD": "Notes",
    "part.v2.ndjson.gz": "part.v2",
    "t.text.gz": "t",
    "rows.parquet": "rows",
    "table.csv": "table.csv",  # not a text type: nothing is taken off (opening it fails later)
    "hf:org/ds": "ds",
    "hf:org/ds/": "ds",
    "hf:wikitext:wikitext-2-raw-v1:validation": "wikitext",
    "hf:wikitext::test": "wikitext",
}


@pytest.mark.parametrize("spec", list(NAMES))
def test_unnamed_specs_follow_the_naming_rule(spec):
    [parsed] = parse_specs([spec])
    assert parsed == DomainSpec(NAMES[spec], spec)


def test_a_folder_keeps_its_whole_name(tmp_path):
    folder = tmp_path / "code.jsonl"  # a folder whose name looks like a file's
    folder.mkdir()
    assert [d.name for d in parse_specs([str(folder), f"{tmp_path / 'src'}/"])] == ["code.jsonl", "src"]


def test_named_specs(tmp_path):
    assert parse_specs(["web=data/web.jsonl", "wiki=hf:wikitext:c", "x.y-z_1=a.txt"]) == [
        DomainSpec("web", "data/web.jsonl"), DomainSpec("wiki", "hf:wikitext:c"), DomainSpec("x.y-z_1", "a.txt"),
    ]
    # "=" that cannot start a name: part of the path
    assert parse_specs(["data/k=v.txt"]) == [DomainSpec("k=v", "data/k=v.txt")]
    odd = tmp_path / "a=b.txt"  # a file literally called NAME=PATH is that file
    odd.write_text("x")
    assert parse_specs([str(odd)]) == [DomainSpec("a=b", str(odd))]


def test_duplicate_and_missing_names_are_refused():
    with raises("the data name 'a' is given twice (x/a.txt and y/a.jsonl.gz); "
                "give each source its own name with NAME=PATH."):
        parse_specs(["x/a.txt", "y/a.jsonl.gz"])
    with raises("the data name 'web' is given twice (a.txt and hf:org/web); "
                "give each source its own name with NAME=PATH."):
        parse_specs(["web=a.txt", "hf:org/web"])
    with raises("'a.txt' has no name; write NAME=PATH (or NAME=hf:DATASET)."):
        parse_specs(["web=w.txt", "a.txt"], require_name=True)
    assert parse_specs(["web=w.txt"], require_name=True) == [DomainSpec("web", "w.txt")]
    with raises("the data argument 'web=' names no file, folder or hf: dataset."):
        parse_specs(["web="])
    with raises("'.txt' leaves no name for its data; write NAME=.txt."):
        parse_specs([".txt"])


@pytest.mark.parametrize("spec", ["hf:", "hf::cfg", "hf:a:b:c:d", "hf:a:b:"])
def test_malformed_hf_specs(spec):
    with raises(f"'{spec}' is not of the form hf:DATASET[:CONFIG][:SPLIT]."):
        parse_specs([f"x={spec}"])


def test_hf_dataset_parts():
    assert hf_dataset("hf:org/data:cfg:validation") == ("org/data", "cfg", "validation")
    assert hf_dataset("hf:org/data") == ("org/data", None, "train")
    assert hf_dataset("hf:org/data::test") == ("org/data", None, "test")


# --------------------------------------------------------------------------- opening local files


def write_parquet(path, columns, row_group_size=None):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    pq.write_table(pa.table(columns), path, row_group_size=row_group_size)


def test_a_folder_opened_as_a_spec_gives_the_text_readers_documents(tmp_path):
    (tmp_path / "a.txt").write_text("a text file\n")
    (tmp_path / "b.md").write_text("markdown")
    (tmp_path / "c.jsonl").write_text(jsonl("j1", "", "j2"))
    with gzip.open(tmp_path / "d.NDJSON.GZ", "wt") as f:
        f.write(jsonl("g1"))
    (tmp_path / ".hidden.txt").write_text("hidden")
    (tmp_path / "skip.csv").write_text("x")
    write_parquet(tmp_path / "e.parquet", {"text": ["p1", None, "p2"]})
    expected = ["a text file\n", "markdown", "j1", "j2", "g1", "p1", "p2"]
    assert read_documents(tmp_path) == expected
    src = open_domain(DomainSpec("d", str(tmp_path)))
    assert isinstance(src, LocalSource) and src.spec == str(tmp_path) and src.start() == [0, 0]
    assert list(src.texts()) == expected
    units = list(src.iter_units(src.start()))
    assert [t for t, _, _ in units] == expected and all(end for _, end, _ in units)
    json.loads(json.dumps([pos for _, _, pos in units]))  # positions are plain JSON
    for k, (_, _, pos) in enumerate(units):  # resuming from any saved position gives the rest
        assert [t for t, _, _ in open_domain(DomainSpec("d", str(tmp_path))).iter_units(pos)] == expected[k + 1 :]


def test_long_plain_text_comes_in_pieces_that_resume(tmp_path):
    body = "".join(f"line {i} of a long file\n" for i in range(8000))  # ~190 KB: pieces of about 128 KiB
    (tmp_path / "long.txt").write_text(body)
    (tmp_path / "z.jsonl").write_text(jsonl("after"))
    src = open_domain(DomainSpec("d", str(tmp_path)))
    units = list(src.iter_units(src.start()))
    assert len(units) >= 3  # at least two pieces, then the JSON-lines document
    assert "".join(t for t, _, _ in units[:-1]) == body and units[-1][0] == "after"
    assert [end for _, end, _ in units] == [False] * (len(units) - 2) + [True, True]
    assert all(type(t) is DocPart for t, _, _ in units[:-2])
    rest = list(src.iter_units(units[0][2]))
    assert "".join(t for t, _, _ in rest[:-1]) == body[len(units[0][0]) :]


def test_parquet_source_resumes_inside_and_across_row_groups(tmp_path):
    path = tmp_path / "p.parquet"
    write_parquet(path, {"text": ["one", "two", "three", "four"]}, row_group_size=3)
    src = LocalSource(str(path))
    assert [t for t, _, _ in src.iter_units([0, 0])] == ["one", "two", "three", "four"]
    assert [t for t, _, _ in src.iter_units([0, 2])] == ["three", "four"]


def test_sub_folders_and_gz_files_and_a_bad_line(tmp_path):
    folder = tmp_path / "dom"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.jsonl").write_text('{"text": "one"}\n\n{"text": ""}\n{"text": "two", "id": 3}\n')
    with gzip.open(folder / "sub" / "b.txt.gz", "wt") as f:
        f.write("three\nfour\n")
    (folder / "notes.csv").write_text("skipped,in,folders\n")
    (folder / ".hidden.txt").write_text("hidden")
    assert list(open_domain(DomainSpec("d", str(folder))).texts()) == ["one", "two", "three\nfour\n"]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok"}\n{"txt": "no"}\n')
    with raises(f'{bad}:2 has no "text" field.'):
        list(open_domain(DomainSpec("bad", str(bad))).texts())


def test_opening_bad_local_specs(tmp_path):
    (tmp_path / "x.csv").write_text("a,b")
    with raises(f"data file or folder '{tmp_path / 'missing.txt'}' does not exist."):
        open_domain(DomainSpec("m", str(tmp_path / "missing.txt")))
    with pytest.raises(HfgrowError, match="^unknown file type"):
        open_domain(DomainSpec("x", str(tmp_path / "x.csv")))
    (tmp_path / "empty").mkdir()
    with pytest.raises(HfgrowError, match=f"^folder '{re.escape(str(tmp_path / 'empty'))}' holds no "):
        open_domain(DomainSpec("e", str(tmp_path / "empty")))


# --------------------------------------------------------------------------- opening hf: datasets


def fake_datasets(monkeypatch, records, calls):
    class Stream(list):
        def skip(self, n):
            return Stream(self[n:])

    def load_dataset(name, config, split, streaming):
        calls.append((name, config, split, streaming))
        return Stream(records)

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))


def test_hf_source_streams_skips_empty_texts_and_resumes(monkeypatch):
    calls: list = []
    fake_datasets(monkeypatch, [{"text": "alpha"}, {"text": ""}, {"text": None}, {"text": "beta"}], calls)
    src = open_domain(parse_specs(["hf:org/data:cfg:validation"])[0])
    assert isinstance(src, HFSource) and src.start() == [0, 0]
    assert list(src.iter_units(src.start())) == [("alpha", True, [0, 1]), ("beta", True, [0, 4])]
    assert list(src.iter_units([0, 1])) == [("beta", True, [0, 4])]
    assert calls[0] == ("org/data", "cfg", "validation", True)


def test_hf_source_errors(monkeypatch):
    calls: list = []
    fake_datasets(monkeypatch, [{"text": "ok"}, {"body": "no text"}], calls)
    with raises("the dataset 'hf:org/d' has a record without a string 'text' field; choose the field with --text-field."):
        list(open_domain(DomainSpec("d", "hf:org/d")).texts())

    def broken(*args, **kwargs):
        raise ConnectionError("no route to the Hub.\nmore detail")

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=broken))
    with raises("cannot open the dataset 'hf:org/d': no route to the Hub."):
        list(open_domain(DomainSpec("d", "hf:org/d")).texts())
    monkeypatch.setitem(sys.modules, "datasets", None)
    with raises("the data 'hf:org/d' needs the datasets package: pip install 'hfgrow[data]'."):
        open_domain(DomainSpec("d", "hf:org/d"))


def test_hf_source_with_the_real_datasets_package(tmp_path, monkeypatch):
    pytest.importorskip("datasets")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    folder = tmp_path / "hfds"
    folder.mkdir()
    (folder / "train.jsonl").write_text(jsonl(*(f"doc {i}" for i in range(7))))
    spec = parse_specs([f"hf:{folder}"])[0]
    assert spec.name == "hfds" and spec.is_hf
    src = open_domain(spec)
    assert [t for t, _, _ in src.iter_units([0, 0])] == [f"doc {i}" for i in range(7)]
    assert [(t, p) for t, _, p in src.iter_units([0, 5])] == [("doc 5", [0, 6]), ("doc 6", [0, 7])]
