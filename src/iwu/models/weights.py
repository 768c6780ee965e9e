"""Pretrained weights from local caches only: torchvision's (torch hub) and Hugging Face's (smp, timm).

A run never downloads. Building a member with `pretrained: true` reads its
weights from the cache they are normally downloaded to; when a file is not
there, one line says which file, where it goes, and how to train without it.
`iwu weights CONFIG` lists what a config needs (and fetches it with --fetch on
a machine with internet), so a cluster without one can be prepared.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from unittest import mock
from urllib.parse import urlparse

import torch

from iwu.errors import UserError

OFF = "or set model.pretrained: false"


@dataclass(frozen=True)
class WeightsFile:
    """One file a member needs: where it comes from and where the cache keeps it."""

    source: str  # the URL (torch hub), or the Hugging Face repository and file
    path: str  # where it is (or would be) in the local cache
    present: bool
    repo: str | None = None  # a Hugging Face repository: `filename` of it
    filename: str | None = None

    def missing_line(self, member: str) -> str:
        return (f"member {member}: pretrained weights {self.source} are not in the local cache ({self.path}); "
                f"fetch them on a machine with internet (iwu weights CONFIG --fetch, then copy the cache), {OFF}")


def hub_file(url: str) -> WeightsFile:
    """A torchvision weights file in the torch hub cache ($TORCH_HOME/hub/checkpoints)."""
    path = os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(urlparse(url).path))
    return WeightsFile(url, path, os.path.isfile(path))


def torchvision_state(url: str) -> dict[str, torch.Tensor]:
    """The state dict of torchvision's weights file at `url`, from the torch hub cache, never the network."""
    file = hub_file(url)
    if not file.present:
        name = os.path.basename(file.path)
        raise UserError(f"ImageNet weights {name} not found: put the file at {file.path} (download it from "
                        f"{url} on a machine with internet), or set pretrained: false to train the "
                        "backbone from scratch")
    try:
        return torch.load(file.path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated download, not a checkpoint, or not weights at all
        reason = " ".join(str(err).split())[:200] or type(err).__name__
        raise UserError(f"{file.path}: unreadable ImageNet weights ({reason}); delete the file and fetch it "
                        f"again from {url}, or set pretrained: false") from None


def hf_file(repo_id: str, filename: str) -> WeightsFile:
    """A file of a Hugging Face repository in the local Hugging Face cache."""
    from huggingface_hub import constants, try_to_load_from_cache

    found = try_to_load_from_cache(repo_id, filename)
    present = isinstance(found, str)
    where = found if present else os.path.join(constants.HF_HUB_CACHE, "models--" + repo_id.replace("/", "--"))
    return WeightsFile(f"{repo_id} ({filename})", where, present, repo_id, filename)


def require(member: str, files: list[WeightsFile]) -> None:
    """One line naming the first of `files` that is not in its cache, before any building starts."""
    for f in files:
        if not f.present:
            raise UserError(f.missing_line(member))


@contextlib.contextmanager
def offline(member: str):
    """Build inside this: Hugging Face and torch hub read their caches and never reach the network.
    `require` names the files known beforehand; one found missing only here is one line too."""
    from huggingface_hub import constants
    from huggingface_hub.errors import LocalEntryNotFoundError

    def refuse(url, *args, **kwargs):
        raise UserError(hub_file(url).missing_line(member))

    saved = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = True
    try:
        with mock.patch.object(torch.hub, "download_url_to_file", refuse):
            yield
    except LocalEntryNotFoundError:
        raise UserError(f"member {member}: its pretrained weights are not in the Hugging Face cache "
                        f"({constants.HF_HUB_CACHE}); fetch them with iwu weights CONFIG --fetch on a machine "
                        f"with internet, {OFF}") from None
    finally:
        constants.HF_HUB_OFFLINE = saved
