"""``things-gateway``: the command line.

Exit codes: 0 success, 1 failure, 2 usage error, 3 (``status``) daemon not
running, 141 the reader of the output went away (``status | head -4``; quietly),
78 (EX_CONFIG) bad config —
systemd's ``RestartPreventExitStatus=78`` keeps a bad config from restart-looping.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from gateway import __version__

if TYPE_CHECKING:
    from gateway.config import ConfigError, GatewayConfig

# The config and everything below are imported by the commands that need them, not
# here: ``--version`` and ``--help`` then start in a fraction of the time (pydantic
# alone takes a few hundred milliseconds on a Raspberry Pi).

EX_CONFIG = 78
EX_PIPE = 141
"""What a shell reports for a process killed by SIGPIPE (128 + 13), as ``cat`` would be."""


def _add_config_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-c",
        "--config",
        metavar="PATH",
        help="config file (default: $THINGS_GATEWAY_CONFIG, else /etc/things-gateway/gateway.toml)",
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    parser = argparse.ArgumentParser(
        prog="things-gateway",
        description="Make things post: MQTT readings and camera frames become status posts.",
    )
    parser.add_argument("--version", action="version", version=f"things-gateway {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    common = argparse.ArgumentParser(add_help=False)
    _add_config_option(common)
    sub.add_parser("run", parents=[common], help="run the gateway daemon")
    sub.add_parser(
        "reload", parents=[common], help="make the running daemon re-read its config (SIGHUP)"
    )
    sub.add_parser(
        "status", parents=[common], help="summary of the running daemon: broker, sensors, outbox"
    )
    sub.add_parser("check-config", parents=[common], help="validate the config; exit 78 on errors")
    sub.add_parser(
        "serve", parents=[common], help="serve the thing's page, /status and /metrics ([web])"
    )
    preview = sub.add_parser(
        "preview",
        parents=[common],
        help="render a rule's post (or the answer to --mention) now, publish nothing",
    )
    preview.add_argument("rule", nargs="?", help="rule id")
    preview.add_argument(
        "--mention",
        metavar="TEXT",
        help="render the reply each publisher would send to a mention saying TEXT",
    )
    preview.add_argument(
        "--sample",
        metavar="FILE",
        help="JSON object of sensor values to use (default: the state the daemon last saved)",
    )
    preview.add_argument("--event", metavar="FILE", help="JSON message for an on_message rule")
    preview.add_argument(
        "--out", metavar="DIR", help="folder for rendered images (default: a temp folder)"
    )
    history = sub.add_parser("history", parents=[common], help="show the local log of posts")
    history.add_argument(
        "--json",
        action="store_true",
        help="print JSON: a list, newest first, of posts with their deliveries"
        " (the README, section Commands, gives its fields)",
    )
    history.add_argument(
        "--limit", type=int, default=20, metavar="N", help="newest N posts (default 20)"
    )
    mentions = sub.add_parser(
        "mentions",
        parents=[common],
        help="list recent mentions and what became of each (answered, or skipped and why)",
    )
    mentions.add_argument("--json", action="store_true", help="print JSON, newest first")
    mentions.add_argument(
        "--limit", type=int, default=20, metavar="N", help="newest N mentions (default 20)"
    )
    outbox = sub.add_parser(
        "outbox", parents=[common], help="list undelivered posts; retry or drop one"
    )
    action = outbox.add_mutually_exclusive_group()
    action.add_argument(
        "--retry", nargs=2, metavar=("POST_ID", "PUBLISHER"), help="retry a delivery now"
    )
    action.add_argument(
        "--drop", nargs=2, metavar=("POST_ID", "PUBLISHER"), help="give up on a delivery"
    )
    demo = sub.add_parser(
        "demo", help="run a self-contained demo: broker, simulated devices, gateway"
    )
    demo.add_argument(
        "--duration", type=float, default=None, metavar="SECONDS", help="stop after this long"
    )
    demo.add_argument(
        "--broker",
        choices=("auto", "mosquitto", "amqtt"),
        default="auto",
        help="private broker: mosquitto if installed, else the embedded amqtt (default auto)",
    )
    demo.add_argument(
        "--state-dir",
        default="things-gateway-demo",
        metavar="DIR",
        help="where the demo keeps its database and archive (default ./things-gateway-demo)",
    )
    return parser


SecretsNeed = Literal["required", "warn", "ignore"]


def _load(args: argparse.Namespace, secrets: SecretsNeed = "required") -> GatewayConfig:
    """The config; ``secrets``: what a ``${NAME}`` that cannot be resolved is.

    An error for what runs the gateway; a warning printed (``warn``) or nothing
    (``ignore``) for commands that only read the database or the daemon's state.
    Those check only the file's shape (the daemon checked the rest when it loaded
    it), so they start without the engine: ``status`` answers in about 0.2 s.
    """
    from gateway.config import config_path

    if secrets == "ignore":
        from gateway.config import load_config as load_shape

        return load_shape(config_path(args.config), missing_secrets=[])
    from gateway.runtime.loading import load_config

    if secrets == "required":
        return load_config(config_path(args.config))
    missing: list[str] = []
    try:
        return load_config(config_path(args.config), missing_secrets=missing)
    finally:  # with the errors, if any: a user fixes everything in one go
        if secrets == "warn":
            for line in missing:
                print(f"warning: {line}", file=sys.stderr)


def nothing_to_do(config: GatewayConfig) -> tuple[ConfigError | None, str | None]:
    """A file that configures nothing is an error; one without rules posts nothing.

    ``(error, warning)``.  A gateway without rules still keeps sensor history and
    camera frames, delivers what its outbox holds and reports its health, so that is
    only a warning; a file with no sensors, cameras, rules or publishers is a mistake:
    exit 78.
    """
    from gateway.config import ConfigError

    if config.rules:
        return None, None
    if not (config.sensors or config.cameras or config.publishers):
        return ConfigError(
            [
                "the config has no [[sensors]], [[cameras]], [[rules]] or [[publishers]]:"
                " nothing to do"
                " (see config/gateway.example.toml)"
            ]
        ), None
    return None, "no [[rules]]: this gateway posts nothing"


def _print_config_errors(path: Path, error: ConfigError) -> None:
    print(f"{path}: invalid config ({len(error.errors)} problem(s)):", file=sys.stderr)
    for line in error.errors:
        print(f"  {line}", file=sys.stderr)


def cmd_check_config(args: argparse.Namespace) -> int:
    """Validate the config and say what it holds.

    Under the service (``$CREDENTIALS_DIRECTORY`` set) a missing secret is an error;
    from a shell it is a warning, since the service may see credentials the shell
    does not.
    """
    from gateway.config import config_path

    under_service = bool(os.environ.get("CREDENTIALS_DIRECTORY"))
    config = _load(args, "required" if under_service else "warn")
    error, warning = nothing_to_do(config)
    if error:
        raise error
    if warning:
        print(f"warning: {warning}", file=sys.stderr)
    unwritable = _state_dir_error(config, certain_only=True)
    if unwritable:
        raise unwritable
    print(
        f"{config_path(args.config)}: OK — {len(config.sensors)} sensors, "
        f"{len(config.cameras)} cameras, {len(config.rules)} rules, "
        f"{len(config.publishers)} publishers"
    )
    for warning in environment_warnings(config):
        print(f"warning: {warning}", file=sys.stderr)
    return 0


def _state_dir_error(config: GatewayConfig, *, certain_only: bool = False) -> ConfigError | None:
    """A ConfigError when the daemon could not write its state_dir (exit 78, no traceback).

    With ``certain_only``, a folder only this user may not write is a warning printed
    instead (``check-config`` run by an admin for the service's user).
    """
    from gateway.config import ConfigError
    from gateway.runtime.loading import state_dir_problem

    found = state_dir_problem(config.gateway.resolved_state_dir())
    if found is None:
        return None
    message, certain = found
    if certain_only and not certain:
        print(f"warning: gateway.state_dir: {message}", file=sys.stderr)
        return None
    return ConfigError([f"gateway.state_dir: {message}"])


def environment_warnings(config: GatewayConfig) -> list[str]:
    """What a valid config needs from this machine and does not find (never fatal)."""
    from gateway.config import PicameraConfig
    from gateway.media.cameras import picamera_available
    from gateway.media.fonts import glyph_warnings

    warnings = []
    for index, camera in enumerate(config.cameras):
        if isinstance(camera, PicameraConfig) and not picamera_available():
            warnings.append(
                f"cameras[{index}] ({camera.id}): picamera2 is not installed: "
                "sudo apt install python3-picamera2, and create the venv with "
                "--system-site-packages"
            )
    return warnings + glyph_warnings(config)


def cmd_run(args: argparse.Namespace) -> int:
    """Run the daemon until SIGTERM/SIGINT; SIGHUP reloads the config."""
    from gateway.config import config_path
    from gateway.runtime.daemon import Daemon
    from gateway.runtime.logs import setup_logging
    from gateway.runtime.memory import limit_sqlite_memory, tune_malloc

    # before any thread starts: large image buffers then go back to the system when freed
    tune_malloc()
    limit_sqlite_memory()
    config = _load(args)
    error, warning = nothing_to_do(config)
    error = error or _state_dir_error(config)
    if error:
        raise error
    setup_logging(config.gateway.log_level)
    if warning:
        logging.getLogger("gateway").warning("%s", warning)
    daemon = Daemon(config_path(args.config), config)
    daemon.install_signal_handlers()
    return daemon.run()


def cmd_reload(args: argparse.Namespace) -> int:
    """Validate the config, then SIGHUP the running daemon."""
    from gateway.runtime.status import send_reload

    done, message = send_reload(_load(args, "warn"))  # the daemon resolves its own secrets
    print(message, file=sys.stdout if done else sys.stderr)
    return 0 if done else 1


def cmd_status(args: argparse.Namespace) -> int:
    """Print the running daemon's health summary."""
    from gateway.runtime.status import running_pid, status_report

    config = _load(args, "ignore")
    print("\n".join(status_report(config)))
    return 0 if running_pid(config) else 3


def cmd_history(args: argparse.Namespace) -> int:
    """Print the newest posts with their deliveries."""
    from gateway.outbox.store import Outbox
    from gateway.runtime.paths import database_path

    path = database_path(_load(args, "ignore"))
    posts = Outbox(path).history(args.limit) if path.exists() else []
    if args.json:
        print(json.dumps(posts, ensure_ascii=False, indent=2))
        return 0
    if not posts:
        print("no posts yet")
    for post in posts:
        states = ", ".join(f"{pid}: {d['status']}" for pid, d in post["deliveries"].items())
        print(f"{post['created_at']}  {post['rule']}  [{states}]")
        print(f"    {post['text']}")
    return 0


def cmd_mentions(args: argparse.Namespace) -> int:
    """List recent mentions: answered (with the reply's link) or skipped, and why."""
    from gateway.conversations.inbox import Inbox
    from gateway.runtime.paths import database_path

    path = database_path(_load(args, "ignore"))
    rows = Inbox(path).recent(args.limit) if path.exists() else []
    if args.json:
        print(json.dumps(rows, ensure_ascii=False, indent=2))
        return 0
    if not rows:
        print("no mentions yet")
    for row in rows:
        what = row["reply_url"] or "" if row["outcome"] == "answered" else row["reason"] or ""
        text = " ".join(row["text"].split())[:60]
        print(
            f"{row['created_at'][:19]}  {row['publisher']:<10} @{row['author']:<24}"
            f" {row['outcome']:<8} {what}  {text!r}"
        )
    return 0


def cmd_outbox(args: argparse.Namespace) -> int:
    """List undelivered posts, or retry/drop one delivery."""
    from gateway.outbox.store import Outbox
    from gateway.runtime.paths import database_path

    config = _load(args, "ignore")
    path = database_path(config)
    if not path.exists():
        print("outbox is empty (no database yet)")
        return 0
    outbox = Outbox(path)
    if args.retry or args.drop:
        post_id, publisher = args.retry or args.drop
        done = outbox.retry(post_id, publisher) if args.retry else outbox.drop(post_id, publisher)
        print(("done" if done else "no such open delivery") + f": {post_id} → {publisher}")
        if done and args.retry:
            from gateway.runtime.status import send_deliver_now

            print(send_deliver_now(config)[1])
        return 0 if done else 1
    rows = outbox.open_deliveries()
    if not rows:
        print("outbox is empty: every post is delivered")
    for row in rows:
        error = f"  {row['last_error']}" if row["last_error"] else ""
        status = f"{row['publisher']:<12} {row['status']:<8} attempts={row['attempts']}"
        print(f"{row['post_id']}  {status}{error}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    """Serve the site of the archive, the live status and the metrics over HTTP."""
    from gateway.runtime.web import serve

    return serve(_load(args, "warn"))


def cmd_preview(args: argparse.Namespace) -> int:
    """Render a rule now from saved state or sample values, per publisher; publish nothing."""
    from gateway.runtime.preview import preview_rule

    config = _load(args)
    if args.mention is not None:
        from gateway.runtime.preview import preview_mention

        return preview_mention(config, args.mention, sample=args.sample)
    if args.rule is None:
        print("preview: give a rule id, or --mention TEXT", file=sys.stderr)
        return 2
    return preview_rule(config, args.rule, sample=args.sample, out=args.out, event=args.event)


def cmd_demo(args: argparse.Namespace) -> int:
    """Run the demo (see gateway/demo/run.py)."""
    from gateway.demo.run import run_demo

    return run_demo(duration=args.duration, state_dir=Path(args.state_dir), broker=args.broker)


def _closed_pipe() -> int:
    """The reader of our output went away (``status | head -4``): stop quietly."""
    # Python would flush stdout again at exit and print a traceback; point it nowhere.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return EX_PIPE


COMMANDS = {
    "run": cmd_run,
    "reload": cmd_reload,
    "status": cmd_status,
    "check-config": cmd_check_config,
    "preview": cmd_preview,
    "history": cmd_history,
    "outbox": cmd_outbox,
    "mentions": cmd_mentions,
    "demo": cmd_demo,
    "serve": cmd_serve,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``things-gateway`` and ``python -m gateway``."""
    args = build_parser().parse_args(argv)  # --version and --help end here
    from gateway.config import ConfigError, config_path

    try:
        code = COMMANDS[args.command](args)
        sys.stdout.flush()  # a closed pipe shows here, not as a traceback at exit
        return code
    except BrokenPipeError:
        return _closed_pipe()
    except ConfigError as exc:
        _print_config_errors(config_path(getattr(args, "config", None)), exc)
        return EX_CONFIG
    except KeyboardInterrupt:
        return 130
