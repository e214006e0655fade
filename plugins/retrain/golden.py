"""Pin a golden version's content hash in its model's config: ``bin/retrain golden pin <model>``.

Evaluation, the ETL's contamination removal and every other golden read refuse content
whose hash differs from the pin, so the pin must come from a golden version that verifies,
never from a hash copied by hand. The config file is edited in place, one line, keeping
its comments and layout.
"""

from __future__ import annotations

import re
from pathlib import Path

from retrain.config import ConfigError, load_config
from retrain.store import IntegrityError, Store

PIN_LINE = re.compile(r"^(?P<indent>[ \t]+)golden_sha256:[^\n#]*(?P<comment>#[^\n]*)?$", re.MULTILINE)
VERSION_LINE = re.compile(r"^(?P<indent>[ \t]+)golden_version:[^\n]*$", re.MULTILINE)


class PinError(ValueError):
    """The golden version cannot be pinned; the config was not changed."""


def pin(config_path: Path, store: Store, replace: bool = False) -> tuple[str, str | None]:
    """Write the verified content hash of the config's golden version into the config, from any store; returns (new, old)."""
    config = load_config(config_path)
    key = f"golden/{config.name}/{config.data.golden_version}"
    if not store.exists(key):
        raise PinError(f"{store.uri(key)}: golden {config.data.golden_version} does not exist; seed or publish it first")
    try:
        content_sha256 = store.verify_version(key)["content_sha256"]
    except IntegrityError as exc:
        raise PinError(f"refusing to pin golden {config.data.golden_version} of {config.name}: its manifest does not verify: {exc}") from None
    old = config.data.golden_sha256
    if old == content_sha256:
        return content_sha256, old
    if old is not None and not replace:
        raise PinError(
            f"{config_path}: field 'data.golden_sha256' pins {old}, but golden {config.data.golden_version} at {store.uri(key)} "
            f"holds {content_sha256}; a golden version is immutable, so one of them is not the set you think. "
            "Pass --replace only if this store's version is the one to trust."
        )
    original = text = config_path.read_text()
    value = f"golden_sha256: \"{content_sha256}\""  # quoted: YAML would read an all-digit hash as a number
    if PIN_LINE.search(text):
        text = PIN_LINE.sub(lambda m: f"{m['indent']}{value}" + (f"  {m['comment']}" if m["comment"] else ""), text, count=1)
    else:
        match = VERSION_LINE.search(text)
        if match is None:
            raise PinError(f"{config_path}: no 'golden_version:' line under data to pin beside")
        text = text[: match.end()] + f"\n{match['indent']}{value}  # pinned: any other content is refused" + text[match.end():]
    config_path.write_text(text)
    try:
        if load_config(config_path).data.golden_sha256 != content_sha256:
            raise ConfigError("the pin did not read back")
    except ConfigError as exc:
        config_path.write_text(original)  # never leave a config broken
        raise PinError(f"{config_path}: the pinned config did not validate ({exc}); the file was restored") from None
    return content_sha256, old
