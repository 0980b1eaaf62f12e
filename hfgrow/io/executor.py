"""Write any plan to a sharded safetensors folder, streaming, with bounded memory.

The plan knows every output tensor's dtype and shape, so each shard's header is
written first and the data follows in header order:

* a tensor copied unchanged never passes through torch: its bytes go from the source
  file to the shard with ``os.copy_file_range`` (an in-kernel copy);
* any other tensor is materialised alone (sources loaded, transform applied, cast),
  written, and dropped, so peak memory is about one output tensor plus its sources.

Everything is written into a temporary sibling of the output folder, which is renamed
into place only when complete: Ctrl-C, a crash or a full disk leave the output as it was.
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Mapping, Sequence

from hfgrow.io import dtypes
from hfgrow.io.checkpoint import Checkpoint, TensorInfo
from hfgrow.errors import HfgrowError
from hfgrow.units import parse_bytes
from hfgrow.io.plan import TensorPlan, total_bytes

if TYPE_CHECKING:  # torch is imported where a tensor is computed: a plan of byte copies never loads it
    import torch

SAFETENSORS_SINGLE = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
_COPY_CHUNK = 1 << 30


@dataclass(frozen=True)
class Shard:
    filename: str
    tensors: tuple[TensorPlan, ...]

    @property
    def nbytes(self) -> int:
        return sum(t.nbytes for t in self.tensors)


def split_shards(tensors: Iterable[TensorPlan], max_shard_size: int) -> list[Shard]:
    """Cut tensors (in order) into shards of at most ``max_shard_size`` bytes of data.

    A tensor larger than the limit gets a shard of its own, like transformers does.
    One shard is named ``model.safetensors``; several ``model-0000i-of-0000n.safetensors``.
    """
    groups: list[list[TensorPlan]] = [[]]
    size = 0
    for tensor in tensors:
        if groups[-1] and size + tensor.nbytes > max_shard_size:
            groups.append([])
            size = 0
        groups[-1].append(tensor)
        size += tensor.nbytes
    if len(groups) == 1:
        return [Shard(SAFETENSORS_SINGLE, tuple(groups[0]))]
    n = len(groups)
    return [Shard(f"model-{i + 1:05d}-of-{n:05d}.safetensors", tuple(g)) for i, g in enumerate(groups)]


def safetensors_header(tensors: Iterable[TensorPlan], metadata: Mapping[str, str] | None = None) -> bytes:
    """The 8-byte length + JSON header for tensors stored back to back in the given order.

    The JSON is padded with spaces to a multiple of 8 bytes so the data is aligned.
    """
    header: dict[str, object] = {"__metadata__": dict(metadata or {"format": "pt"})}
    offset = 0
    for tensor in tensors:
        end = offset + tensor.nbytes
        header[tensor.name] = {"dtype": tensor.dtype, "shape": list(tensor.shape), "data_offsets": [offset, end]}
        offset = end
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    return struct.pack("<Q", len(blob)) + blob


def tensor_bytes(tensor: torch.Tensor) -> memoryview:
    """A tensor's raw little-endian bytes, without a copy when it is contiguous."""
    import torch

    flat = tensor.detach().contiguous().reshape(-1)
    return memoryview(flat.view(torch.uint8).numpy()) if flat.numel() else memoryview(b"")


def _copy_range(src_path: Path, offset: int, length: int, dst) -> None:
    with open(src_path, "rb") as src:
        dst.flush()
        done = 0
        try:
            while done < length:
                n = os.copy_file_range(src.fileno(), dst.fileno(), min(_COPY_CHUNK, length - done), offset + done)
                if n == 0:
                    raise HfgrowError(f"{src_path} ended early; the source checkpoint is truncated.")
                done += n
        except OSError:  # filesystems without copy_file_range: plain buffered copy
            src.seek(offset + done)
            dst.seek(0, os.SEEK_END)
            remaining = length - done
            while remaining:
                chunk = src.read(min(1 << 24, remaining))
                if not chunk:
                    raise HfgrowError(f"{src_path} ended early; the source checkpoint is truncated.") from None
                dst.write(chunk)
                remaining -= len(chunk)
            dst.flush()
            return
        dst.seek(0, os.SEEK_END)


def materialize(tensor: TensorPlan, source: Checkpoint) -> torch.Tensor:
    """Compute one output tensor in memory (sources loaded, transform applied, cast)."""
    inputs = [source.load(name) for name in tensor.sources]
    value = tensor.transform(*inputs) if tensor.transform is not None else inputs[0]
    value = value.to(dtypes.to_torch(tensor.dtype))
    if tuple(value.shape) != tuple(tensor.shape):
        raise RuntimeError(f"plan bug: {tensor.name} computed as {tuple(value.shape)}, planned {tensor.shape}")
    return value


def copies_bytes(tensor: TensorPlan, source: Checkpoint) -> bool:
    """Whether the executor writes ``tensor`` as a byte copy of its source (no torch), as opposed to computing it.

    True for a tensor without transform whose single source is a safetensors tensor of the same dtype and
    shape. ``--dry-run`` summaries ask this function, so they report what the writer really does.
    """
    if tensor.transform is not None or len(tensor.sources) != 1:
        return False
    info = source.tensors[tensor.sources[0]]
    return info.file is not None and info.dtype == tensor.dtype and tuple(info.shape) == tuple(tensor.shape)


def _runs(shard: Shard, source: Checkpoint) -> list[tuple[Path | None, int, int, list[TensorPlan]]]:
    """The shard's tensors in order, as (source file, offset, length, tensors): consecutive byte copies that lie
    back to back in one source file make one run (one in-kernel copy); a computed tensor is a run of its own
    (file None)."""
    runs: list[tuple[Path | None, int, int, list[TensorPlan]]] = []
    for tensor in shard.tensors:
        if not copies_bytes(tensor, source):
            runs.append((None, 0, tensor.nbytes, [tensor]))
            continue
        info = source.tensors[tensor.sources[0]]
        if runs and runs[-1][0] == info.file and runs[-1][1] + runs[-1][2] == info.offset:
            file, offset, length, tensors = runs[-1]
            runs[-1] = (file, offset, length + info.nbytes, [*tensors, tensor])
        else:
            runs.append((info.file, info.offset, info.nbytes, [tensor]))
    return runs


def write_shard(shard: Shard, source: Checkpoint, path: Path, progress=None) -> None:
    """Write one shard file: header first, then every tensor's bytes in header order."""
    with open(path, "wb") as out:
        out.write(safetensors_header(shard.tensors))
        for file, offset, length, tensors in _runs(shard, source):
            if file is not None:
                _copy_range(file, offset, length, out)
            else:
                data = tensor_bytes(materialize(tensors[0], source))
                out.write(data)
                del data
            if progress is not None:
                progress.update(length)
        expected = len(safetensors_header(shard.tensors)) + shard.nbytes
        if out.tell() != expected:
            raise RuntimeError(f"plan bug: {path.name} has {out.tell()} bytes, expected {expected}")


def index_json(shards: list[Shard]) -> dict:
    return {
        "metadata": {"total_size": sum(s.nbytes for s in shards)},
        "weight_map": {t.name: s.filename for s in shards for t in s.tensors},
    }


def write_weights(tensors: Sequence[TensorPlan], source: Checkpoint, folder: Path,
                  max_shard_size: int | str = "5GB", progress=False) -> list[Shard]:
    """Write the planned tensors as safetensors shards (+ index when several) into ``folder``.

    ``progress``: True for a progress bar, or an object whose ``update(nbytes)`` is called after every copy
    (raising there stops the write: checks that run alongside use it).
    """
    shards = split_shards(tensors, parse_bytes(max_shard_size, "shard size"))
    bar = owned = None
    if progress is True:
        from hfgrow.console import progress as progress_bar

        bar = owned = progress_bar(total=total_bytes(tensors), desc="writing", unit="B", unit_scale=True)
    elif progress:
        bar = progress
    try:
        for shard in shards:
            write_shard(shard, source, folder / shard.filename, bar)
    finally:
        if owned is not None:
            owned.close()
    if len(shards) > 1:
        (folder / SAFETENSORS_INDEX).write_text(json.dumps(index_json(shards), indent=2) + "\n")
    return shards


def save_state_dict(state_dict: Mapping[str, torch.Tensor], out_dir: Path, max_shard_size: int | str = "5GB",
                    progress: bool = False) -> list[Shard]:
    """Write in-memory tensors with the same writer (used when exporting a trained model).

    Tensors sharing storage are all written as real copies; drop tied duplicates first.

    Example:
        >>> save_state_dict(model.state_dict(), Path("out"), max_shard_size="2GB")
    """
    memory = {name: t.detach().cpu() for name, t in state_dict.items()}
    infos = {}
    plans = []
    for name, tensor in memory.items():
        dtype = dtypes.from_torch(tensor.dtype)
        if dtype is None:
            raise HfgrowError(f"tensor {name} has dtype {tensor.dtype}, which safetensors cannot store here.")
        shape = tuple(tensor.shape)
        infos[name] = TensorInfo(name, dtype, shape, None, 0, dtypes.nbytes(dtype, shape))
        plans.append(TensorPlan(name, dtype, shape, (name,)))
    return write_weights(plans, Checkpoint(Path(out_dir), infos, memory), Path(out_dir), max_shard_size, progress)
