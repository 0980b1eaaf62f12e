"""Where LiGO keeps the frozen source weights while it learns: accelerate's big-model placement.

With a :class:`Placement` the frozen float32 source lives where accelerate puts it (other GPUs, CPU memory,
or disk through accelerate's offload) and is fetched to the compute device one tensor at a time; without
one, everything sits on the compute device. :class:`SourceWeights` holds them either way.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from hfgrow.errors import HfgrowError


@dataclass(frozen=True)
class Placement:
    """Where the frozen source weights live while the growth is learned.

    ``device_map``: ``"auto"`` (accelerate's :func:`infer_auto_device_map` over the source
    model, GPUs first, then CPU, then disk, within ``max_memory``), one device for everything
    (``"cpu"``, ``"disk"``, ``"cuda:1"``), or a dict from module name to device as accelerate
    writes it. Weights on ``"disk"`` are offloaded to ``offload_folder`` (float32 memory maps,
    accelerate's format) and read back when a block needs them.

    Example:
        >>> Placement("auto", max_memory=parse_max_memory("0=20GiB,cpu=64GiB"), offload_folder=Path("/scratch"))
    """

    device_map: str | dict[str, Any] = "auto"
    max_memory: dict[int | str, int | str] | None = None
    offload_folder: Path | None = None


def parse_max_memory(text: str | None) -> dict[int | str, str] | None:
    """``"0=20GiB,cpu=8GiB"`` -> ``{0: "20GiB", "cpu": "8GiB"}`` (accelerate's max_memory).

    Example:
        >>> parse_max_memory("0=20GiB, cpu=8GiB")
        {0: '20GiB', 'cpu': '8GiB'}
    """
    if not text:
        return None
    result: dict[int | str, str] = {}
    for item in text.split(","):
        device, sep, size = item.strip().partition("=")
        if not sep or not device.strip() or not size.strip():
            raise HfgrowError(f"--max-memory item '{item.strip()}' is not DEVICE=SIZE (e.g. 0=20GiB,cpu=8GiB).")
        device = device.strip()
        result[int(device) if device.isdigit() else device] = size.strip()
    return result


def parse_device_map(text: str | None) -> str | dict[str, Any] | None:
    """``auto``, one device name, or a JSON object / JSON file mapping module names to devices.

    Example:
        >>> parse_device_map('{"model.embed_tokens": "cpu", "model.layers": "disk", "": "cpu"}')["model.layers"]
        'disk'
    """
    if text is None:
        return None
    text = text.strip()
    if text.startswith("{") or text.endswith(".json"):
        from hfgrow.io.folder import parse_bounded_json, read_user_file

        value = parse_bounded_json(read_user_file(text, "--device-map file") if text.endswith(".json") else text,
                                   "--device-map", None)
        if not isinstance(value, dict):
            raise HfgrowError("--device-map JSON must be an object {module name: device}.")
        return value
    return text


def placement_from_options(device_map: str | None, max_memory: str | None = None,
                           offload_folder: Path | None = None) -> Placement | None:
    """The placement ``--device-map``/``--max-memory``/``--offload-folder`` ask for (None: everything on one device).

    Example:
        >>> placement_from_options("auto", "0=20GiB,cpu=64GiB").max_memory
        {0: '20GiB', 'cpu': '64GiB'}
    """
    if device_map is None:
        if max_memory or offload_folder:
            raise HfgrowError("--max-memory and --offload-folder go with --device-map.")
        return None
    parsed = parse_device_map(device_map)
    if max_memory and parsed != "auto":
        raise HfgrowError("--max-memory is a budget for --device-map auto; an explicit map places every module itself.")
    return Placement(parsed, parse_max_memory(max_memory), offload_folder)


def _device(name: Any) -> torch.device | str:
    """A device-map value as a torch device (or ``"disk"``); devices this machine lacks are refused."""
    if name == "disk":
        return "disk"
    if isinstance(name, bool) or not isinstance(name, (int, str)):
        raise HfgrowError(f"--device-map value {name!r} is not a device (use cpu, disk, cuda:N or a GPU index).")
    if isinstance(name, int) or name.isdigit():
        name = f"cuda:{int(name)}"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise HfgrowError(f"--device-map names an unknown device '{name}'.") from None
    if device.type == "cuda" and (not torch.cuda.is_available() or (device.index or 0) >= torch.cuda.device_count()):
        raise HfgrowError(f"--device-map puts weights on {device}, which this machine does not have.")
    if device.type not in ("cpu", "cuda"):
        raise HfgrowError(f"--device-map device '{name}' is not supported; use cpu, disk or cuda:N.")
    return device


def source_devices(names: list[str], skeleton, placement: Placement) -> dict[str, torch.device | str]:
    """The device (or ``"disk"``) of every source tensor under ``placement``.

    ``skeleton`` is the source model on the meta device (``layout.skeleton``): accelerate sizes it
    for ``device_map="auto"`` without any weights.
    """
    device_map = placement.device_map
    if device_map == "auto":
        from accelerate import infer_auto_device_map

        no_split = list(getattr(skeleton, "_no_split_modules", None) or [])
        try:
            device_map = infer_auto_device_map(skeleton, max_memory=placement.max_memory, dtype=torch.float32,
                                               no_split_module_classes=no_split)
        except (ValueError, KeyError) as exc:
            raise HfgrowError(f"accelerate could not place the source model: {exc}") from None
    elif isinstance(device_map, str):
        device_map = {"": device_map}
    devices: dict[str, torch.device | str] = {}
    for name in names:
        module = max((m for m in device_map if m == "" or name == m or name.startswith(m + ".")), key=len,
                     default=None)
        if module is None:
            raise HfgrowError(f"--device-map places no module holding {name}; add an entry for it (or \"\").")
        devices[name] = _device(device_map[module])
    return devices


class SourceWeights:
    """The frozen source tensors (float32), each on its device or offloaded to disk by accelerate.

    ``get(name)`` returns the tensor on the compute device; ``stack(names)`` the tensors of
    one weight kind stacked (kept stacked on the compute device when all of them live there).
    """

    def __init__(self, load: Callable[[str], torch.Tensor], names: list[str], compute: torch.device,
                 devices: dict[str, torch.device | str] | None = None, offload_folder: Path | None = None,
                 progress: bool = False):
        from accelerate.utils import OffloadedWeightsLoader, offload_weight, save_offload_index

        self.compute = compute
        self.resident: dict[str, torch.Tensor] = {}
        self._stacks: dict[tuple[str, ...], torch.Tensor] = {}
        self._offload_dir: Path | None = None
        self.disk: OffloadedWeightsLoader | None = None
        devices = devices or {}
        index: dict[str, Any] = {}
        if progress:
            from hfgrow.console import progress as progress_bar

            names = progress_bar(names, desc="placing the source weights", unit="tensor")
        try:
            for name in names:
                device = devices.get(name, compute)
                tensor = load(name).to(torch.float32)
                if device == "disk":
                    if self._offload_dir is None:
                        if offload_folder is None:
                            raise HfgrowError("the device map puts weights on disk; give --offload-folder DIR.")
                        Path(offload_folder).mkdir(parents=True, exist_ok=True)
                        self._offload_dir = Path(tempfile.mkdtemp(prefix="hfgrow-offload-", dir=offload_folder))
                    offload_weight(tensor, name, str(self._offload_dir), index=index)
                else:
                    self.resident[name] = tensor.to(device)
            if index:
                save_offload_index(index, str(self._offload_dir))
                self.disk = OffloadedWeightsLoader(save_folder=str(self._offload_dir))
        except BaseException:  # a failure (or Ctrl-C) while placing leaves no offloaded copies behind
            self.close()
            raise

    def get(self, name: str) -> torch.Tensor:
        tensor = self.resident.get(name)
        if tensor is None:
            tensor = self.disk[name]
        return tensor.to(self.compute, non_blocking=True)

    def stack(self, names: tuple[str, ...]) -> torch.Tensor:
        stacked = self._stacks.get(names)
        if stacked is not None:
            return stacked
        stacked = torch.stack([self.get(name) for name in names])
        if all(name in self.resident and self.resident[name].device == self.compute for name in names):
            self._stacks[names] = stacked  # all local: keep the stack, drop the single copies
            for name in names:
                del self.resident[name]
        return stacked

    def close(self) -> None:
        if self._offload_dir is not None:
            shutil.rmtree(self._offload_dir, ignore_errors=True)
            self._offload_dir = None
