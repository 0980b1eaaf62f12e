"""Data specs: the one parser of ``[NAME=]PATH|hf:NAME[:CONFIG][:SPLIT]`` and the one opener of a spec's documents.

Every command that takes text (``hfgrow train --data/--eval-data``, ``hfgrow eval --data``,
``hfgrow mix entropy --data``) goes through :func:`parse_specs` and :func:`open_domain`.

A spec is

- ``NAME=PATH`` or ``PATH``: a file or a folder that :mod:`hfgrow.data.text` reads;
- ``NAME=hf:DATASET[:CONFIG][:SPLIT]`` or ``hf:...``: a Hugging Face dataset, streamed with the
  optional ``datasets`` package (``streaming=True``: never downloaded whole). CONFIG may be left
  empty (``hf:wikitext::test``) for the default one; SPLIT defaults to ``train``.

``NAME=`` is recognised when NAME is made of letters, digits, ``_``, ``.`` and ``-`` (no ``/``, no
``:``) and no file is literally called ``NAME=PATH``.

The naming rule, for a spec without ``NAME=``: a file's name without its text-file suffix (every
suffix :data:`~hfgrow.data.text.TEXT_SUFFIXES` lists, ``.jsonl.gz`` as one), a folder's own name, a
dataset's last path part: ``web.jsonl.gz`` -> ``web``, ``a.txt`` -> ``a``, ``data/code/`` ->
``code``, ``hf:org/ds:cfg`` -> ``ds``. Two specs with the same name are refused (name them).

An opened domain reads its documents from a saved position, so training can resume exactly:
``start()`` gives the first position, ``iter_units(pos)`` yields ``(text, ends_document,
position after it)``; a long plain-text file comes in pieces, the pieces that go on being
:class:`~hfgrow.data.text.DocPart`. Positions are small JSON lists: ``[file index, byte offset or
row]`` for files, ``[0, records read]`` for a dataset.

Example:
    >>> [(d.name, d.spec) for d in parse_specs(["web.jsonl.gz", "code=src/", "hf:org/tiny-stories"])]
    [('web', 'web.jsonl.gz'), ('code', 'src/'), ('tiny-stories', 'hf:org/tiny-stories')]
    >>> docs = open_domain(DomainSpec("web", "web.jsonl.gz"))           # doctest: +SKIP
    >>> next(docs.texts())                                               # doctest: +SKIP
    'first document'
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from hfgrow.data.text import TEXT_SUFFIXES, DocPart, file_kind, iter_documents_from, list_files
from hfgrow.data.token_folder import TokenSource, is_token_folder, token_folder_domains
from hfgrow.errors import HfgrowError

__all__ = ["DomainSpec", "parse_specs", "spec_name", "hf_dataset", "LocalSource", "HFSource", "open_domain"]

_NAME = re.compile(r"^[\w.\-]+$")
# longest first, so "web.jsonl.gz" loses ".jsonl.gz" and not only ".gz"
_SUFFIXES_LONGEST_FIRST = tuple(sorted(TEXT_SUFFIXES, key=len, reverse=True))


@dataclass(frozen=True)
class DomainSpec:
    """One named source of documents: ``spec`` is a local path or ``hf:NAME[:CONFIG][:SPLIT]``.

    ``part`` is set for a domain of a token folder (``hfgrow tokenize``): the domain's name inside
    the folder ``spec`` (``name`` may rename it).

    Example:
        >>> DomainSpec("wiki", "hf:wikitext:wikitext-2-raw-v1").is_hf
        True
    """

    name: str
    spec: str
    part: str | None = None

    @property
    def is_hf(self) -> bool:
        return self.spec.startswith("hf:")


def hf_dataset(spec: str) -> tuple[str, str | None, str]:
    """Split ``hf:NAME[:CONFIG][:SPLIT]`` into (name, config or None, split; default "train").

    Example:
        >>> hf_dataset("hf:wikitext:wikitext-2-raw-v1:validation")
        ('wikitext', 'wikitext-2-raw-v1', 'validation')
        >>> hf_dataset("hf:roneneldan/TinyStories"), hf_dataset("hf:wikitext::test")
        (('roneneldan/TinyStories', None, 'train'), ('wikitext', None, 'test'))
    """
    parts = spec[3:].split(":")
    if not parts[0] or len(parts) > 3 or (len(parts) == 3 and not parts[2]):
        raise HfgrowError(f"'{spec}' is not of the form hf:DATASET[:CONFIG][:SPLIT].")
    config = parts[1] or None if len(parts) > 1 else None
    split = parts[2] if len(parts) > 2 else "train"
    return parts[0], config, split


def spec_name(spec: str) -> str:
    """The name a spec gets without ``NAME=`` (see the module docstring for the rule).

    Example:
        >>> spec_name("data/web.jsonl.gz"), spec_name("a.b.txt"), spec_name("hf:org/ds:cfg")
        ('web', 'a.b', 'ds')
    """
    if spec.startswith("hf:"):
        return hf_dataset(spec)[0].rstrip("/").rsplit("/", 1)[-1]
    path = Path(spec).expanduser()
    name = path.name if path.name not in ("", ".", "..") else path.resolve().name
    if not path.is_dir():
        lower = name.lower()
        for suffix in _SUFFIXES_LONGEST_FIRST:
            if lower.endswith(suffix):
                return name[: -len(suffix)]
    return name


def published_spec(spec: str) -> str:
    """How a spec is written where others read it (cards, recipes, the commands they print): a ``hf:`` dataset
    as given, a local file or folder by its name only (no path of this machine).

    Example:
        >>> published_spec("/home/me/corpora/web.jsonl"), published_spec("hf:org/ds:cfg"), published_spec("tok/")
        ('web.jsonl', 'hf:org/ds:cfg', 'tok')
    """
    if spec.startswith("hf:"):
        return spec
    path = Path(spec.rstrip("/") or spec).expanduser()
    return path.name if path.name not in ("", ".", "..") else path.resolve().name


def _split_name(value: str) -> tuple[str, str]:
    """``NAME=SPEC`` -> (NAME, SPEC); anything else -> ("", value)."""
    head, sep, tail = value.partition("=")
    if sep and _NAME.match(head) and not Path(value).expanduser().exists():
        return head, tail
    return "", value


def parse_specs(values: list[str], *, require_name: bool = False) -> list[DomainSpec]:
    """Parse ``[NAME=]PATH`` / ``[NAME=]hf:...`` arguments into named specs, in order.

    Nothing is opened here (see :func:`open_domain`); a ``hf:`` spec's form is checked. A token
    folder (``hfgrow tokenize``) stands for its domains, under their own names (``NAME=`` renames
    a folder of one domain).

    Raises:
        HfgrowError: an empty spec, a missing name when ``require_name``, a name the rule cannot
            make (``.txt``), a malformed ``hf:`` spec, two specs with the same name, or an
            unfinished token folder.

    Example:
        >>> [d.name for d in parse_specs(["a.txt", "web=hf:HuggingFaceFW/fineweb"])]
        ['a', 'web']
        >>> parse_specs(["data/a.txt", "more/a.jsonl"])
        Traceback (most recent call last):
        hfgrow.errors.HfgrowError: the data name 'a' is given twice (data/a.txt and more/a.jsonl); give each source its own name with NAME=PATH.
    """
    out: list[DomainSpec] = []
    for value in values:
        name, spec = _split_name(value)
        if not spec:
            raise HfgrowError(f"the data argument '{value}' names no file, folder or hf: dataset.")
        if spec.startswith("hf:"):
            hf_dataset(spec)
        if not spec.startswith("hf:") and is_token_folder(spec):
            for domain, part in token_folder_domains(spec, name):
                _add(out, DomainSpec(domain, spec, part=part))
            continue
        if not name:
            if require_name:
                raise HfgrowError(f"'{value}' has no name; write NAME=PATH (or NAME=hf:DATASET).")
            name = spec_name(spec)
            if not name:
                raise HfgrowError(f"'{value}' leaves no name for its data; write NAME={value}.")
        _add(out, DomainSpec(name, spec))
    return out


def _add(out: list[DomainSpec], spec: DomainSpec) -> None:
    twin = next((d for d in out if d.name == spec.name), None)
    if twin is not None:
        raise HfgrowError(
            f"the data name '{spec.name}' is given twice ({twin.spec} and {spec.spec}); "
            "give each source its own name with NAME=PATH."
        )
    out.append(spec)


class _Source:
    """What every opened domain offers beyond ``start`` and ``iter_units``."""

    spec: str

    def start(self) -> list:
        """The position before the first document."""
        return [0, 0]

    def iter_units(self, pos: list) -> Iterator[tuple[str, bool, list]]:
        raise NotImplementedError

    def texts(self) -> Iterator[str]:
        """Every text from the start; a plain-text piece that goes on in the next one is a DocPart."""
        return (text for text, _, _ in self.iter_units(self.start()))


class LocalSource(_Source):
    """Documents of local files (see :mod:`hfgrow.data.text`). Position = [file index, byte offset or row].

    The files are listed when the source is made, so a missing path or an unsupported file fails
    at once.

    Example:
        >>> src = LocalSource("data/web")                                 # doctest: +SKIP
        >>> [(t, end, pos) for t, end, pos in src.iter_units([0, 0])][:1]   # doctest: +SKIP
        [('first document', True, [0, 32])]
    """

    def __init__(self, spec: str, text_field: str = "text"):
        self.spec = spec
        self.files = list_files(spec)
        self.text_field = text_field

    def check(self) -> None:
        """Read every JSON-lines file once, so a bad line is an error naming its file and line before training
        starts rather than when the sampler reaches it. Costs one parse of those files (plain text needs none;
        parquet files are checked for the text column when opened)."""
        for path in self.files:
            if file_kind(path) == "jsonl":
                for _ in iter_documents_from(path, 0, self.text_field):
                    pass

    def iter_units(self, pos: list) -> Iterator[tuple[str, bool, list]]:
        first, offset = int(pos[0]), int(pos[1])
        for index in range(first, len(self.files)):
            start = offset if index == first else 0
            for text, after in iter_documents_from(self.files[index], start, self.text_field):
                yield text, not isinstance(text, DocPart), [index, after]


def _first_line(exc: BaseException) -> str:
    text = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return text.rstrip(".")


class HFSource(_Source):
    """A Hugging Face dataset read with ``streaming=True``. Position = [0, records read].

    Null and empty texts are skipped; a record without a string ``text_field`` is an error.

    Example:
        >>> src = HFSource("hf:roneneldan/TinyStories")                   # doctest: +SKIP
        >>> next(src.texts())[:14]                                         # doctest: +SKIP
        'One day, a lit'
    """

    def __init__(self, spec: str, text_field: str = "text"):
        self.spec = spec
        self.name, self.config, self.split = hf_dataset(spec)
        self.text_field = text_field
        try:
            import datasets  # noqa: F401
        except ImportError:
            raise HfgrowError(f"the data '{spec}' needs the datasets package: pip install 'hfgrow[data]'.") from None

    def iter_units(self, pos: list) -> Iterator[tuple[str, bool, list]]:
        import datasets

        try:
            ds = datasets.load_dataset(self.name, self.config, split=self.split, streaming=True)
        except Exception as exc:  # noqa: BLE001 - network, missing config, ...: the user needs the message
            raise HfgrowError(f"cannot open the dataset '{self.spec}': {_first_line(exc)}.") from None
        n = int(pos[1])
        if n:
            ds = ds.skip(n)
        for record in ds:
            n += 1
            text = record.get(self.text_field)
            if self.text_field not in record or not isinstance(text, (str, type(None))):
                raise HfgrowError(
                    f"the dataset '{self.spec}' has a record without a string '{self.text_field}' field; "
                    "choose the field with --text-field."
                )
            if text:
                yield text, True, [0, n]


def open_domain(spec: DomainSpec, text_field: str = "text"):
    """Open a spec's documents: local files, or a streamed ``hf:`` dataset.

    A token-folder domain (``spec.part`` set) opens as a
    :class:`hfgrow.data.token_folder.TokenSource`: token ids, no texts.

    Raises:
        HfgrowError: a missing path, an unsupported file, a folder without text files, or a
            ``hf:`` spec without the ``datasets`` package.

    Example:
        >>> src = open_domain(DomainSpec("web", "data/web.jsonl"))        # doctest: +SKIP
        >>> src.spec, src.start()                                          # doctest: +SKIP
        ('data/web.jsonl', [0, 0])
    """
    if spec.part is not None:
        return TokenSource(spec)
    return HFSource(spec.spec, text_field) if spec.is_hf else LocalSource(spec.spec, text_field)
