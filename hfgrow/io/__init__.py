"""Stage 1 and the last stage: bytes in and out. Source resolution (folder, Hub, adapter), the safetensors
checkpoint reader, the write plan and the one executor that streams it to disk, and Hub push/pull."""
