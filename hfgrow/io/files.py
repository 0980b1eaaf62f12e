"""The non-weight files of a model folder that travel with it: tokenizer, chat templates, generation settings.

One list, used wherever a model folder is produced from another (a grown model, a merged adapter, a
trained checkpoint's export) and for what a Hub download fetches beside the weights.

Example:
    >>> copy_carry_over(Path("small"), Path("big"))
    ['tokenizer.json', 'tokenizer_config.json', 'generation_config.json']
"""

from __future__ import annotations

import shutil
from pathlib import Path

from hfgrow.io.folder import ModelFolder

#: Tokenizer files of every kind transformers saves (fnmatch patterns, relative to the folder).
TOKENIZER_FILES: tuple[str, ...] = (
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
    "tokenizer.model", "tokenizer*.model", "spiece.model", "vocab.json", "vocab.txt", "merges.txt", "*.tiktoken",
)
#: Chat templates, in the files transformers 5 writes them to.
CHAT_TEMPLATE_FILES: tuple[str, ...] = (
    "chat_template.jinja", "chat_template.json", "additional_chat_templates/*.jinja",
)
#: Copied unchanged from a source folder into every folder hfgrow derives from it.
CARRY_OVER: tuple[str, ...] = (*TOKENIZER_FILES, *CHAT_TEMPLATE_FILES, "generation_config.json")


def carry_over_files(folder: Path | ModelFolder) -> list[Path]:
    """The files of ``folder`` that :data:`CARRY_OVER` names, sorted, each once.

    Raises:
        HfgrowError: one of them is a link that leaves the folder (see :class:`~hfgrow.io.folder.ModelFolder`).
    """
    return ModelFolder(folder).glob(CARRY_OVER)


def copy_carry_over(src: Path | ModelFolder, dst: Path) -> list[str]:
    """Copy the carried-over files of ``src`` into ``dst`` as regular files (sub-folders kept); return their names.

    Every file is checked to lie inside ``src`` before the first one is copied.
    """
    folder = ModelFolder(src)
    copied = []
    for item in carry_over_files(folder):
        relative = item.relative_to(folder.root)
        (dst / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(item, dst / relative)
        copied.append(relative.as_posix())
    return copied
