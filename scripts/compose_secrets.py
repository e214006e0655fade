"""Generate docker-compose.yaml's shared secrets once, into ``.env`` beside it (owner-only, never committed).

    python3 scripts/compose_secrets.py          # then: docker compose up --build

docker-compose.yaml ships no secret: every Airflow container needs the same JWT secret, API secret key and Fernet key,
and compose refuses to start without them, naming the variable. This writes each one that ``.env`` lacks (a value
already there is kept, so the metadata DB's encrypted fields stay readable) and makes the file 0600. Stdlib only.
"""

from __future__ import annotations

import argparse
import base64
import os
import secrets
from pathlib import Path

SECRETS = {
    "RETRAIN_JWT_SECRET": lambda: secrets.token_urlsafe(32),
    "RETRAIN_API_SECRET_KEY": lambda: secrets.token_urlsafe(32),
    "RETRAIN_FERNET_KEY": lambda: base64.urlsafe_b64encode(secrets.token_bytes(32)).decode(),  # a Fernet key
}
"""The variables docker-compose.yaml requires, and how each is generated."""


def missing_lines(text: str) -> list[str]:
    """``NAME=value`` lines for each secret that ``text`` (an env file) does not set yet."""
    present = {line.split("=", 1)[0].strip() for line in text.splitlines() if "=" in line}
    return [f"{name}={generate()}" for name, generate in SECRETS.items() if name not in present]


def write_secrets(env_file: Path) -> list[str]:
    """Add the missing secrets to ``env_file`` and make it owner-only; return the names added."""
    text = env_file.read_text() if env_file.exists() else ""
    lines = missing_lines(text)
    fd = os.open(env_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(("" if not text or text.endswith("\n") else "\n") + "".join(line + "\n" for line in lines))
    return [line.split("=", 1)[0] for line in lines]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env-file", type=Path, default=Path(__file__).resolve().parents[1] / ".env")
    args = parser.parse_args()
    added = write_secrets(args.env_file)
    print(f"{args.env_file} (0600): " + (f"generated {', '.join(added)}" if added else "every secret already set"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
