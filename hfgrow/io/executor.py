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

import errno
import json
import os
import shutil
import stat
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


#: Files that make a folder a model folder (one of them, besides config.json) or an hfgrow output.
_WEIGHT_NAMES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                 "pytorch_model.bin.index.json")


def is_model_folder(folder: Path) -> bool:
    """Whether ``folder`` holds a model (config.json and weights) or an hfgrow output (hfgrow.yaml)."""
    folder = Path(folder)
    if (folder / "hfgrow.yaml").is_file():
        return True
    if not (folder / "config.json").is_file():
        return False
    return any((folder / name).is_file() for name in _WEIGHT_NAMES) or any(folder.glob("model-*.safetensors"))


def check_output_path(out: Path, sources: Iterable[Path], overwrite: bool) -> None:
    """Refuse outputs that would clobber data.

    OUT may not be SRC, inside it or around it; it must be absent or empty unless ``overwrite`` is given, and
    ``overwrite`` replaces only a model folder (config.json + weights, or an hfgrow output), never the current
    folder or one above it.
    """
    try:
        _check_output_path(Path(out).expanduser().resolve(), sources, overwrite)
    except OSError as exc:  # a name too long, a path through a file, no permission to look
        raise write_error(exc, Path(out)) from None


def _check_output_path(out: Path, sources: Iterable[Path], overwrite: bool) -> None:
    for src in sources:
        src = Path(src).resolve()
        if out == src or src in out.parents:
            raise HfgrowError(f"the output {out} is the source folder or inside it; choose another output folder.")
        if out in src.parents:
            raise HfgrowError(f"the source {src} is inside the output {out}; choose another output folder.")
    cwd = Path.cwd().resolve()
    if out == cwd or out in cwd.parents:
        raise HfgrowError(f"the output {out} is the current folder or holds it, and OUT is replaced as a whole; "
                          "name a new folder, e.g. ./grown.")
    if not out.exists():
        return
    if not out.is_dir():
        raise HfgrowError(f"{out} exists and is not a folder; choose another output folder.")
    if not any(out.iterdir()):
        return
    if not overwrite:
        raise HfgrowError(f"{out} already exists and is not empty; pass --overwrite to replace it.")
    if not is_model_folder(out):
        raise HfgrowError(f"--overwrite replaces only an empty folder or a model folder (config.json with weights, "
                          f"or an hfgrow output), and {out} is neither; choose another output folder.")


def _temp_name(final: Path, kind: str, pid: int) -> Path:
    """``.NAME.hfgrow-KIND-PID`` beside ``final``, shortened (with a hash) when it would exceed 255 bytes."""
    name = f".{final.name}.hfgrow-{kind}-{pid}"
    if len(name.encode()) > 255:
        import hashlib

        digest = hashlib.sha1(final.name.encode()).hexdigest()[:12]
        name = f".{final.name.encode()[:120].decode(errors='ignore')}-{digest}.hfgrow-{kind}-{pid}"
    return final.parent / name


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


def remove_stale_temporaries(final: Path) -> list[Path]:
    """Delete the temporary folders an earlier run into ``final`` left behind when it was killed (SIGKILL, power
    loss): ``.NAME.hfgrow-tmp-PID`` / ``-old-PID`` whose process is gone. Returns what was removed."""
    removed = []
    for kind in ("tmp", "old"):
        pattern = _temp_name(final, kind, 0).name[:-1] + "*"
        for path in final.parent.glob(glob_escape(pattern)):
            pid = path.name.rsplit("-", 1)[-1]
            if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)) and path.is_dir() \
                    and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
                removed.append(path)
    return removed


def glob_escape(pattern: str) -> str:
    """Escape glob metacharacters of a file name, keeping a trailing ``*``."""
    import glob

    return glob.escape(pattern[:-1]) + "*" if pattern.endswith("*") else glob.escape(pattern)


_OS_REASONS = {
    errno.ENOSPC: "the disk is full",
    errno.EDQUOT: "the disk quota is exceeded",
    errno.EROFS: "the file system is read-only",
    errno.ENAMETOOLONG: "a file name is too long for the file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EIO: "an input/output error occurred",
}


def write_error(exc: OSError, out: Path) -> HfgrowError:
    """One sentence for a failed write into ``out`` (nothing of it was left behind, OUT is as it was)."""
    reason = _OS_REASONS.get(exc.errno) or (exc.strerror or str(exc) or type(exc).__name__).rstrip(".").lower()
    where = f" ({exc.filename})" if exc.filename else ""
    return HfgrowError(f"cannot write {out}: {reason}{where}; {out} was left as it was.")


class OutputFolder:
    """A temporary sibling of ``out``, renamed to ``out`` on success and deleted on failure.

    A failed write (full disk, read-only or missing permission, a name too long) becomes one HfgrowError
    sentence; temporary folders of earlier runs into ``out`` that were killed are removed first.

    Example:
        >>> with OutputFolder(Path("big"), overwrite=False) as tmp:
        ...     (tmp / "config.json").write_text("{}")
    """

    def __init__(self, out: Path, overwrite: bool = False):
        self.out = Path(out).expanduser().resolve()
        self.overwrite = overwrite
        self.tmp = _temp_name(self.out, "tmp", os.getpid())

    def __enter__(self) -> Path:
        try:
            self.out.parent.mkdir(parents=True, exist_ok=True)
            remove_stale_temporaries(self.out)
            shutil.rmtree(self.tmp, ignore_errors=True)
            self.tmp.mkdir()
        except OSError as exc:
            raise write_error(exc, self.out) from None
        return self.tmp

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            if isinstance(exc, OSError):
                raise write_error(exc, self.out) from None
            return
        try:
            uniform_modes(self.tmp)
            swap_into_place(self.tmp, self.out)
        except OSError as error:
            shutil.rmtree(self.tmp, ignore_errors=True)
            raise write_error(error, self.out) from None


def uniform_modes(folder: Path) -> None:
    """Give every file under ``folder`` the permission bits a new file gets here (the umask's).

    safetensors writes through a private temporary file (mode 0600) and copied tokenizer files keep their
    source's bits; an output folder is shared and published as a whole, so its files should all read alike.
    """
    probe = folder / ".hfgrow-mode"
    probe.touch()
    mode = stat.S_IMODE(probe.stat().st_mode)
    probe.unlink()
    for path in folder.rglob("*"):
        if path.is_file() and not path.is_symlink():
            path.chmod(mode)


def swap_into_place(tmp: Path, final: Path) -> None:
    """Rename the finished folder ``tmp`` to ``final``; an existing ``final`` is moved aside first, then deleted.

    At every moment ``final`` is either the old complete folder or the new one, never a mix.
    """
    old = None
    if final.exists():
        old = _temp_name(final, "old", os.getpid())
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
    try:
        os.replace(tmp, final)
    except OSError:
        if old is not None:
            os.replace(old, final)  # put the old folder back
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def check_free_space(folder: Path, needed: int) -> None:
    folder = Path(folder)
    while not folder.exists():
        folder = folder.parent
    free = shutil.disk_usage(folder).free
    if free < needed + (64 << 20):
        raise HfgrowError(
            f"not enough disk space at {folder}: the output needs {needed / 1e9:.2f} GB, {free / 1e9:.2f} GB free."
        )


def write_weights(tensors: Sequence[TensorPlan], source: Checkpoint, folder: Path,
                  max_shard_size: int | str = "5GB", progress=False) -> list[Shard]:
    """Write the planned tensors as safetensors shards (+ index when several) into ``folder``.

    ``progress``: True for a progress bar, or an object whose ``update(nbytes)`` is called after every copy
    (raising there stops the write: checks that run alongside use it).
    """
    shards = split_shards(tensors, parse_bytes(max_shard_size, "shard size"))
    bar = owned = None
    if progress is True:
        from tqdm.auto import tqdm

        bar = owned = tqdm(total=total_bytes(tensors), unit="B", unit_scale=True, desc="writing", leave=False)
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
