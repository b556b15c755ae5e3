"""Command line for the work that should not happen at request time.

    python -m prediction_service train            train missing first versions into MODEL_DIR
    python -m prediction_service versions         list every model's versions
    python -m prediction_service activate mnist 2 make version 2 serve (running servers follow)
    python -m prediction_service token            print the admin token (generating it if needed)

Settings come from the environment and `.env`, as for the server (MODEL_DIR, MNIST_DATA, ...).
"""

import argparse
import sys

from prediction_service.core import logs
from prediction_service.core.admin_token import AdminToken
from prediction_service.core.errors import ServiceError
from prediction_service.core.settings import get_settings
from prediction_service.models.catalog import model_kinds
from prediction_service.models.registry import Registry
from prediction_service.storage.versions import ModelStore


def train(args: argparse.Namespace) -> int:
    settings = get_settings()
    kinds = [kind for kind in model_kinds(settings) if not args.model or kind.name in args.model]
    registry = Registry(ModelStore(settings.model_dir), kinds)
    registry.start()
    for name in registry.kinds:
        status = registry.status(name)
        version = registry.serving_version(name)
        print(f"{name}: {status.state}" + (f", version {version} serves" if version else f" ({status.reason})"))
    return 0 if registry.ready() else 1


def versions(args: argparse.Namespace) -> int:
    settings = get_settings()
    store = ModelStore(settings.model_dir)
    for kind in model_kinds(settings):
        if args.model and kind.name not in args.model:
            continue
        pointer = store.serving(kind.name)
        print(f"{kind.name} (MODEL_DIR={settings.model_dir}):")
        stored_versions = store.list_versions(kind.name)
        if not stored_versions:
            print("  no versions yet: python -m prediction_service train")
        for stored in stored_versions:
            mark = "*" if pointer and pointer.version == stored.version else " "
            metrics = ", ".join(
                f"{key} {value}"
                for key, value in stored.manifest.get("metrics", {}).items()
                if key in ("holdout_accuracy", "test_accuracy")
            )
            source = stored.manifest.get("source", "")
            gate = stored.manifest.get("gate")
            verdict = "" if gate is None else (" passed the gate" if gate.get("passed") else " rejected by the gate")
            print(f" {mark} {stored.version:>3}  {stored.manifest.get('created_at', '')}  {source}{verdict}  {metrics}")
    return 0


def activate(args: argparse.Namespace) -> int:
    settings = get_settings()
    store = ModelStore(settings.model_dir)
    store.set_serving(args.model, args.version)
    print(f"{args.model}: version {args.version} serves (running servers switch within {settings.reload_interval} s)")
    return 0


def token(args: argparse.Namespace) -> int:
    settings = get_settings()
    if settings.admin_token:
        print(settings.admin_token.get_secret_value())
        return 0
    admin = AdminToken(None, settings.model_dir)
    admin.ensure()
    print(admin.path.read_text().strip())
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m prediction_service", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    train_command = commands.add_parser("train", help="train the first version of models that have none")
    train_command.add_argument("model", nargs="*", help="penguins and/or mnist (default: both)")
    train_command.set_defaults(run=train)
    versions_command = commands.add_parser("versions", help="list versions; * marks the serving one")
    versions_command.add_argument("model", nargs="*", help="penguins and/or mnist (default: both)")
    versions_command.set_defaults(run=versions)
    activate_command = commands.add_parser("activate", help="make a kept version serve (rollback)")
    activate_command.add_argument("model", choices=["penguins", "mnist"])
    activate_command.add_argument("version", type=int)
    activate_command.set_defaults(run=activate)
    token_command = commands.add_parser("token", help="print the admin token")
    token_command.set_defaults(run=token)
    args = parser.parse_args(argv)
    settings = get_settings()
    logs.configure(settings.log_level, settings.json_logs)
    try:
        return args.run(args)
    except ServiceError as error:
        print(f"error: {error.detail}", file=sys.stderr)
        return 2
