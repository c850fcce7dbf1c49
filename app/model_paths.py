"""Where models and the speaker store are: model options resolved to checkpoint folders or hub ids,
the shipped model's folders, and the speaker store's path.

Its own module so the CLI, the subcommands, the session and the engine set-up all read these
options without importing each other (no import cycles).
"""

from __future__ import annotations

import argparse
import os
import re

from app.errors import AppError

HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*")


def resolve_model(spec: str | None, flag: str, default_dir: str | None) -> str | None:
    """A model option -> a checkpoint folder, a hub id, or None (head switched off).

    An existing folder is a checkpoint folder; anything else shaped `owner/name` is a hub id;
    `none` switches the head off; anything else is an error naming the flag.
    """
    if spec is None:
        return default_dir if default_dir and os.path.isdir(default_dir) else None
    if spec.lower() == "none":
        return None
    if os.path.isdir(spec):
        if not os.path.isfile(os.path.join(spec, "config.json")):
            raise AppError(f"{flag} {spec}: the folder has no config.json, so it is not a checkpoint folder")
        return os.path.abspath(spec)
    if os.path.exists(spec):
        raise AppError(f"{flag} {spec}: is a file; give the checkpoint folder (config.json + weights)")
    if HUB_ID.fullmatch(spec) and not spec.startswith((".", "/")):
        return spec
    raise AppError(f"{flag} {spec}: no such folder, and not a hub id of the form owner/name")


def embedded_dir(head: str) -> str:
    """models/embedded/<head> in this checkout (the shipped default model)."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return os.path.join(root, "models", "embedded", head)


def speakers_db(args: argparse.Namespace) -> str:
    """The speaker store path: --speakers-db, else the per-user default."""
    if args.speakers_db:
        return args.speakers_db
    from voiceprints.store_schema import default_store_path

    return str(default_store_path())
