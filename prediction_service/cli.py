"""Command line for the work that should not happen at request time.

    python -m prediction_service train            train missing first versions into MODEL_DIR
    python -m prediction_service worker           run retraining jobs (no HTTP) until SIGTERM
    python -m prediction_service versions         list every model's versions
    python -m prediction_service activate mnist 2 make version 2 serve (running servers follow)
    python -m prediction_service token            print the admin token (generating it if needed)

Settings come from the environment and `.env`, as for the server (MODEL_DIR, MNIST_DATA, ...).
"""

import argparse
import asyncio
import sys

from prediction_service.core import logs
from prediction_service.core.admin_token import AdminToken
from prediction_service.core.errors import ServiceError
from prediction_service.core.settings import get_settings
from prediction_service.models.catalog import build_models, model_names
from prediction_service.models.interface import ModelContext
from prediction_service.models.registry import Registry
from prediction_service.storage.backends import model_store, postgres
from prediction_service.storage.layout import Layout


def train(args: argparse.Namespace) -> int:
    settings = get_settings()
    models = [model for model in build_models(ModelContext(settings)) if not args.model or model.name in args.model]
    registry = Registry(model_store(settings, postgres(settings)), models)
    registry.start()
    for name in registry.models:
        status = registry.status(name)
        version = status.serving_version
        print(f"{name}: {status.state}" + (f", version {version} serves" if version else f" ({status.reason})"))
    return 0 if registry.ready() else 1


def worker(args: argparse.Namespace) -> int:
    from prediction_service.services import Worker  # the service's parts: only this command needs them

    asyncio.run(Worker(get_settings()).run())
    return 0


def versions(args: argparse.Namespace) -> int:
    settings = get_settings()
    store = model_store(settings, postgres(settings))
    for name in model_names():
        if args.model and name not in args.model:
            continue
        pointer = store.serving(name)
        print(f"{name} (MODEL_DIR={settings.model_dir}):")
        stored_versions = store.list_versions(name)
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
    store = model_store(settings, postgres(settings))
    store.set_serving(args.model, args.version)
    print(f"{args.model}: version {args.version} serves (running servers switch within {settings.reload_interval} s)")
    return 0


def token(args: argparse.Namespace) -> int:
    settings = get_settings()
    if settings.admin_token:
        print(settings.admin_token.get_secret_value())
        return 0
    admin = AdminToken(None, Layout(settings.model_dir).admin_token)
    admin.ensure()
    print(admin.path.read_text().strip())
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m prediction_service", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    names = model_names()
    some_models = f"{', '.join(names)}: any of them (default: all)"
    commands = parser.add_subparsers(dest="command", required=True)
    train_command = commands.add_parser("train", help="train the first version of models that have none")
    train_command.add_argument("model", nargs="*", help=some_models)
    train_command.set_defaults(run=train)
    worker_command = commands.add_parser(
        "worker", help="run retraining jobs that API replicas (RUN_TRAINING=false) queue; SIGTERM stops it"
    )
    worker_command.set_defaults(run=worker)
    versions_command = commands.add_parser("versions", help="list versions; * marks the serving one")
    versions_command.add_argument("model", nargs="*", help=some_models)
    versions_command.set_defaults(run=versions)
    activate_command = commands.add_parser("activate", help="make a kept version serve (rollback)")
    activate_command.add_argument("model", choices=names)
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
