"""What a config's members need from the local caches: checked, all at once, before a run prepares
any data, and fetched by `iwu weights --fetch` on a machine with internet."""

from __future__ import annotations

from iwu.errors import UserError
from iwu.models.families import family_of
from iwu.models.registry import PRETRAINED_URLS
from iwu.models.weights import WeightsFile, hub_file


def member_weights(name: str, args: dict) -> list[WeightsFile]:
    """The pretrained files member `name` reads (those known before building it)."""
    prefix, sep, arch = name.partition(":")
    if not sep:
        return [hub_file(url) for url in PRETRAINED_URLS.get(name, ())]
    try:
        return family_of(name, prefix).weights(name, arch, args)
    except (KeyError, AttributeError, UserError):  # an unknown family, architecture or encoder: building says so
        return []


def missing_weights(config) -> list[tuple[str, WeightsFile]]:
    """(member, file) for every pretrained file a config needs that is not in the caches."""
    if not config.model.pretrained:
        return []
    return [(m.name, f) for m in config.members for f in member_weights(m.name, m.args) if not f.present]


def check_weights(config) -> None:
    missing = missing_weights(config)
    if missing:
        files = "; ".join(f"{name}: {f.source} -> {f.path}" for name, f in missing)
        raise UserError(f"{len(missing)} pretrained weights file{'s' * (len(missing) > 1)} not in the local caches "
                        f"({files}); fetch them with iwu weights CONFIG --fetch on a machine with internet and "
                        "copy the caches, or set model.pretrained: false")


def fetch(files: list[WeightsFile]) -> None:
    """Download `files` into their caches (the only place iwu reaches the network)."""
    import torch
    from huggingface_hub import hf_hub_download

    for f in files:
        if f.present:
            continue
        try:
            if f.repo is None:
                torch.hub.load_state_dict_from_url(f.source, map_location="cpu", weights_only=True)
                continue
            hf_hub_download(f.repo, f.filename)
            if f.repo.startswith("smp-hub/"):  # smp reads the encoder's config too
                hf_hub_download(f.repo, "config.json")
        except Exception as err:  # no network, a proxy, a moved file: say which, in one line
            reason = " ".join(str(err).split())[:200] or type(err).__name__
            raise UserError(f"{f.source}: could not fetch it ({reason}); is this machine online?") from None
