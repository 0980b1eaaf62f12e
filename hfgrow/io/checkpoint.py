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


def read_safetensors_header(path: Path) -> tuple[dict[str, TensorInfo], dict[str, str]]:
    """Parse one safetensors file's header into TensorInfos (in data order) and its metadata."""
    try:
        with open(path, "rb") as f:
            (length,) = struct.unpack("<Q", f.read(8))
            if length > 100_000_000:
                raise ValueError("header too large")
            header = json.loads(f.read(length))
    except (OSError, ValueError, struct.error) as exc:
        raise HfgrowError(f"{path} is not a readable safetensors file ({exc}).") from None
    metadata = header.pop("__metadata__", None) or {}
    data_start = 8 + length
    infos = {}
    try:
        entries = sorted(header.items(), key=lambda kv: kv[1]["data_offsets"][0])
        for _, entry in entries:
            begin, end = entry["data_offsets"]
            tuple(entry["shape"]), entry["dtype"]
    except (KeyError, TypeError, ValueError):
        raise HfgrowError(f"{path} is corrupt: its header lacks dtype/shape/data_offsets for some tensor.") from None
    for name, entry in entries:
        begin, end = entry["data_offsets"]
        dtype = entry["dtype"]
        if dtype not in dtypes.SUPPORTED:
            raise HfgrowError(f"tensor {name} in {path.name} has dtype {dtype}, which hfgrow does not support.")
        shape = tuple(entry["shape"])
        if end - begin != dtypes.nbytes(dtype, shape):
            raise HfgrowError(f"{path.name} is corrupt: tensor {name} has the wrong byte length.")
        infos[name] = TensorInfo(name, dtype, shape, path, data_start + begin, end - begin)
    return infos, metadata


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
    def open(cls, folder: Path) -> "Checkpoint":
        folder = Path(folder)
        files = weight_files(folder)
        if files[0].suffix == ".safetensors":
            tensors: dict[str, TensorInfo] = {}
            for file in files:
                infos, metadata = read_safetensors_header(file)
                if metadata.get("format", "pt") not in ("pt", "torch"):
                    raise HfgrowError(f"{file.name} holds '{metadata['format']}' weights; hfgrow reads PyTorch checkpoints.")
                tensors.update(infos)
            return cls(folder, tensors)
        return cls._open_bin(folder, files)

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


def weight_files(folder: Path) -> list[Path]:
    """The weight files of a model folder: safetensors preferred, .bin as fallback."""
    for index_name, single_name in (
        ("model.safetensors.index.json", "model.safetensors"),
        ("pytorch_model.bin.index.json", "pytorch_model.bin"),
    ):
        index = folder / index_name
        if index.is_file():
            try:
                weight_map = json.loads(index.read_text())["weight_map"]
            except (ValueError, KeyError) as exc:
                raise HfgrowError(f"{index} is not a valid checkpoint index ({exc}).") from None
            files = [folder / name for name in dict.fromkeys(weight_map.values())]
            missing = [f.name for f in files if not f.is_file()]
            if missing:
                raise HfgrowError(f"{index.name} lists {missing[0]}, which is missing from {folder}.")
            return files
        if (folder / single_name).is_file():
            return [folder / single_name]
    loose = [p for p in sorted(folder.glob("*.safetensors")) if not p.name.startswith(("adapter_", "hfgrow_"))]
    if loose:
        return loose
    raise HfgrowError(
        f"{folder} has no model weights (model.safetensors, sharded safetensors or pytorch_model.bin)."
    )
