"""Read a checkpoint's tensor table without loading the tensors.

A safetensors file is an 8-byte little-endian header length, a JSON header
(name -> dtype, shape, data_offsets) and the raw bytes. Reading only the header
tells us every tensor's name, dtype, shape and exact byte range, so a plan can be
built, printed and sized with no tensor in memory, and unchanged tensors can later
be copied byte for byte.

``pytorch_model.bin`` checkpoints are supported as a fallback: they are loaded with
``torch.load(weights_only=True, mmap=True)``, which refuses pickles that carry code.
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from hfgrow.errors import HfgrowError
from hfgrow.io import dtypes
from hfgrow.io.folder import ModelFolder

if TYPE_CHECKING:  # torch is imported where tensors are made, not to read a header
    import torch

@dataclass(frozen=True)
class TensorInfo:
    """Where one source tensor lives. ``file`` is None for tensors held in memory (.bin)."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    file: Path | None
    offset: int  # absolute byte offset of the data in ``file``
    nbytes: int


#: Largest safetensors header hfgrow (and the safetensors library) reads.
MAX_HEADER_BYTES = 100_000_000


def read_safetensors_header(path: Path, label: str | None = None) -> tuple[dict[str, TensorInfo], dict[str, str]]:
    """Parse one safetensors file's header into TensorInfos (in data order) and its metadata.

    The header is checked the way the safetensors library checks it, so a file hfgrow accepts also loads:
    a JSON object of ``name -> {dtype, shape, data_offsets}`` (plus an optional ``__metadata__`` map of
    strings), non-negative integer shapes and offsets, byte lengths that match dtype and shape, data ranges
    that tile the data section from 0 without gaps or overlaps, and a file exactly as long as they say.

    Raises:
        HfgrowError: one sentence naming the file and the first problem found.
    """
    label = label or path.name

    def corrupt(reason: str) -> HfgrowError:
        return HfgrowError(f"{label} is corrupt: {reason}.")

    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            head = f.read(8)
            if len(head) < 8:
                raise corrupt(f"it is {len(head)} bytes long, shorter than the 8-byte header length")
            (length,) = struct.unpack("<Q", head)
            if length > MAX_HEADER_BYTES:
                raise corrupt(f"its header length {length:,} is above the {MAX_HEADER_BYTES:,}-byte limit")
            if 8 + length > size:
                raise corrupt(f"its header length {length:,} runs past the end of the file ({size:,} bytes)")
            raw = f.read(length)
    except OSError as exc:
        raise HfgrowError(f"cannot read {label} ({exc.strerror or exc}).") from None
    try:
        header = json.loads(raw)
    except (ValueError, RecursionError):
        raise corrupt("its header is not UTF-8 JSON") from None
    if not isinstance(header, dict):
        raise corrupt("its header is not a JSON object")
    metadata = header.pop("__metadata__", None)
    if metadata is None:
        metadata = {}
    elif not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise corrupt("its __metadata__ is not a map of strings")
    entries = []
    for name, entry in header.items():
        problem = _entry_problem(entry)
        if problem:
            raise corrupt(f"tensor {name} {problem}")
        entries.append((name, entry["dtype"], tuple(entry["shape"]), *entry["data_offsets"]))
    entries.sort(key=lambda e: (e[3], e[4]))
    data_start = 8 + length
    infos = {}
    position = 0
    for name, dtype, shape, begin, end in entries:
        if begin != position:
            what = "overlaps the tensor before it" if begin < position else f"leaves a gap of {begin - position} bytes"
            raise corrupt(f"tensor {name}'s data {what} (data_offsets [{begin}, {end}])")
        if end - begin != dtypes.nbytes(dtype, shape):
            raise corrupt(f"tensor {name} takes {end - begin} bytes but {dtype} {list(shape)} needs "
                          f"{dtypes.nbytes(dtype, shape)}")
        position = end
        infos[name] = TensorInfo(name, dtype, shape, path, data_start + begin, end - begin)
    if data_start + position != size:
        if data_start + position > size:
            raise corrupt(f"it is truncated ({size:,} bytes, its header describes {data_start + position:,})")
        raise corrupt(f"it has {size - data_start - position:,} bytes after the last tensor's data")
    return infos, metadata


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _entry_problem(entry) -> str | None:
    """What is wrong with one header entry, or None."""
    if not isinstance(entry, dict):
        return "is not described by an object"
    dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
    if not isinstance(dtype, str):
        return "has no dtype"
    if dtype not in dtypes.SUPPORTED:
        return f"has dtype {dtype}, which hfgrow does not support"
    if not isinstance(shape, list) or not all(_is_int(d) and d >= 0 for d in shape):
        return "has no shape of non-negative integers"
    if not isinstance(offsets, list) or len(offsets) != 2 or not all(_is_int(o) and o >= 0 for o in offsets):
        return "has no data_offsets pair of non-negative integers"
    if offsets[1] < offsets[0]:
        return f"has data_offsets {offsets} that end before they begin"
    return None


class Checkpoint:
    """All tensors of a model folder, by name, with lazy loading.

    Example:
        >>> ckpt = Checkpoint.open(Path("TinyLlama"))
        >>> ckpt.tensors["model.embed_tokens.weight"].shape
        (32000, 2048)
        >>> ckpt.load("model.norm.weight").dtype
        torch.bfloat16
    """

    def __init__(self, folder: Path, tensors: dict[str, TensorInfo], memory: dict[str, torch.Tensor] | None = None):
        self.folder = folder
        self.tensors = tensors
        self._memory = memory or {}

    @property
    def format(self) -> str:
        return "pytorch_bin" if self._memory else "safetensors"

    @property
    def total_bytes(self) -> int:
        return sum(info.nbytes for info in self.tensors.values())

    @classmethod
    def open(cls, folder: Path | ModelFolder) -> "Checkpoint":
        """Read the tensor table of a model folder (headers only for safetensors); every file must lie inside it.

        Raises:
            HfgrowError: no weights, a file outside the folder, a corrupt header or index, a tensor stored twice.
        """
        folder = ModelFolder(folder)
        files, weight_map, index_name = _weight_layout(folder)
        if files[0].suffix != ".safetensors":
            return cls._open_bin(folder.path, files)
        tensors: dict[str, TensorInfo] = {}
        for file in files:
            infos, metadata = read_safetensors_header(file, _label(folder, file))
            if metadata.get("format", "pt") not in ("pt", "torch"):
                raise HfgrowError(f"{file.name} holds '{metadata['format']}' weights; hfgrow reads PyTorch checkpoints.")
            for name, info in infos.items():
                if name in tensors:
                    raise HfgrowError(f"tensor {name} is stored twice, in {_label(folder, tensors[name].file)} and "
                                      f"{_label(folder, file)}; the checkpoint is inconsistent.")
                tensors[name] = info
        for name, shard in (weight_map or {}).items():
            info = tensors.get(name)
            if info is None or info.file != folder.root / shard:
                raise HfgrowError(f"{index_name} puts tensor {name} in {shard}, which does not hold it; the "
                                  "checkpoint is inconsistent.")
        return cls(folder.path, tensors)

    @classmethod
    def _open_bin(cls, folder: Path, files: list[Path]) -> "Checkpoint":
        import torch

        memory: dict[str, torch.Tensor] = {}
        for file in files:
            try:
                try:
                    state = torch.load(file, map_location="cpu", weights_only=True, mmap=True)
                except RuntimeError as exc:  # legacy (non-zip) format cannot be memory-mapped
                    if "mmap" not in str(exc):
                        raise
                    state = torch.load(file, map_location="cpu", weights_only=True)
            except Exception as exc:  # noqa: BLE001 - torch raises many types for bad pickles
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise HfgrowError(
                    f"refusing to load {file.name}: it is not a plain tensor checkpoint ({first[:160]}); "
                    "convert it to safetensors from a trusted environment."
                ) from None
            for name, tensor in state.items():
                if not isinstance(tensor, torch.Tensor):
                    raise HfgrowError(f"{file.name} holds a non-tensor entry '{name}'; it is not a model checkpoint.")
                memory[name] = tensor
        tensors = {}
        for name, tensor in memory.items():
            dtype = dtypes.from_torch(tensor.dtype)
            if dtype is None:
                raise HfgrowError(f"tensor {name} has dtype {tensor.dtype}, which hfgrow does not support.")
            shape = tuple(tensor.shape)
            tensors[name] = TensorInfo(name, dtype, shape, None, 0, dtypes.nbytes(dtype, shape))
        return cls(folder, tensors, memory)

    def load(self, name: str) -> torch.Tensor:
        """The tensor ``name`` as a CPU torch tensor.

        Safetensors data is read with a plain positioned read into a private buffer (not
        memory-mapped): the buffer is freed with the tensor, so resident memory stays at the
        tensors currently in use instead of growing with every mapped page of the source.
        """
        if name in self._memory:
            return self._memory[name]
        return read_tensor(self.tensors[name])

    def close(self) -> None:
        """Drop in-memory tensors (safetensors data is read per call and holds no handles)."""
        self._memory = {}


def read_tensor(info: TensorInfo) -> torch.Tensor:
    """Read one safetensors tensor from its file (little-endian data, as the format stores it)."""
    import torch

    torch_dtype = dtypes.to_torch(info.dtype)
    if info.nbytes == 0:
        return torch.empty(info.shape, dtype=torch_dtype)
    buffer = bytearray(info.nbytes)
    view = memoryview(buffer)
    with open(info.file, "rb", buffering=0) as f:
        done = 0
        while done < info.nbytes:
            n = os.preadv(f.fileno(), [view[done:]], info.offset + done)
            if n == 0:
                raise HfgrowError(f"{info.file} ended early; the checkpoint is truncated.")
            done += n
    return torch.frombuffer(buffer, dtype=torch_dtype).reshape(info.shape)


WEIGHT_LAYOUTS: tuple[tuple[str, str], ...] = (
    ("model.safetensors.index.json", "model.safetensors"),
    ("pytorch_model.bin.index.json", "pytorch_model.bin"),
)


def has_weights(folder: Path | ModelFolder) -> bool:
    """Whether a model folder holds weight files at all (a config-only folder holds none), by the rules of
    :func:`weight_files`, which then checks them."""
    folder = ModelFolder(folder)
    return any(folder.find(name) is not None for layout in WEIGHT_LAYOUTS for name in layout) or bool(
        _loose_weights(folder))


def _loose_weights(folder: ModelFolder) -> list[Path]:
    """safetensors files under other names (sharded without an index); adapters and hfgrow's sidecars are not weights."""
    return [p for p in folder.glob(["*.safetensors"]) if not p.name.startswith(("adapter_", "hfgrow_"))]


def weight_files(folder: Path | ModelFolder) -> list[Path]:
    """The weight files of a model folder: safetensors preferred, .bin as fallback; each checked to lie inside it."""
    return _weight_layout(ModelFolder(folder))[0]


def _label(folder: ModelFolder, path: Path) -> str:
    try:
        return Path(path).relative_to(folder.root).as_posix()
    except ValueError:
        return Path(path).name


def _weight_layout(folder: ModelFolder) -> tuple[list[Path], dict[str, str] | None, str | None]:
    """(weight files, the index's weight_map or None, the index's name or None)."""
    for index_name, single_name in WEIGHT_LAYOUTS:
        if folder.find(index_name) is not None:
            index = folder.read_json(index_name)
            weight_map = index.get("weight_map")
            if not isinstance(weight_map, dict) or not weight_map or not all(
                    isinstance(name, str) and isinstance(file, str) for name, file in weight_map.items()):
                raise HfgrowError(f"{index_name} in {folder.path} has no weight_map from tensor names to file names.")
            files = [folder.file(name, f"'{name}' (listed in {index_name})") for name in dict.fromkeys(weight_map.values())]
            weight_map = {tensor: (folder.root / file).relative_to(folder.root).as_posix()
                          for tensor, file in weight_map.items()}
            return files, weight_map, index_name
        single = folder.find(single_name)
        if single is not None:
            return [single], None, None
    loose = _loose_weights(folder)
    if loose:
        return loose, None, None
    raise HfgrowError(
        f"{folder.path} has no model weights (model.safetensors, sharded safetensors or pytorch_model.bin)."
    )
