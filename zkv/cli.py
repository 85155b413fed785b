"""The ``zkv`` command line: thin wrappers that parse options and call into the modules.

    zkv node CONFIG              run one node (frontend + store processes)
    zkv tail CONFIG|ENDPOINT...  print the replication stream as it happens
    zkv verify CONFIG...         do these nodes hold identical data? (exit 0 yes, 1 no)
    zkv status CONFIG            one node's replication state, from its heartbeat
"""

from __future__ import annotations

import sys
from typing import Annotated, Optional

import typer

from zkv.config import Config, ConfigError, load_config
from zkv.replication import catchup as wire

app = typer.Typer(add_completion=False, no_args_is_help=True, help="zkv: a replicated key-value store.")


def _config_or_exit(path: str) -> Config:
    try:
        return load_config(path)
    except ConfigError as exc:
        typer.echo(f"zkv: {exc}", err=True)
        raise typer.Exit(2) from None


@app.command()
def node(config: Annotated[str, typer.Argument(help="the node's TOML config file")]) -> None:
    """Run one node: a store process and a frontend process, until SIGTERM or Ctrl-C."""
    cfg = _config_or_exit(config)
    from zkv.node import run_node

    raise typer.Exit(run_node(cfg, config))


@app.command()
def tail(
    targets: Annotated[list[str], typer.Argument(help="config files or tcp:// bus endpoints")],
    all_: Annotated[bool, typer.Option("--all", help="also subscribe to the configs' peers")] = False,
    json: Annotated[bool, typer.Option("--json", help="one JSON object per event")] = False,
    count: Annotated[Optional[int], typer.Option("--count", "-n", help="exit after N events")] = None,
) -> None:
    """Print every replication event as it happens: time, origin, seq, op, key, value."""
    from zkv.tail import tail as run_tail

    endpoints: list[str] = []
    for t in targets:
        if t.startswith("tcp://") or t.startswith("ipc://"):
            endpoints.append(t)
            continue
        cfg = _config_or_exit(t)
        endpoints.append(cfg.bus)
        if all_:
            endpoints.extend(p.bus for p in cfg.peers)
    endpoints = list(dict.fromkeys(endpoints))
    typer.echo(f"# tailing {', '.join(endpoints)} (Ctrl-C to stop)", err=True)
    run_tail(endpoints, as_json=json, limit=count)


@app.command()
def verify(
    configs: Annotated[list[str], typer.Argument(help="config files of the nodes to compare")],
    timeout: Annotated[float, typer.Option(help="seconds to wait for the nodes to agree")] = 15.0,
) -> None:
    """Exit 0 if every node has applied the same events and holds the same data, else 1."""
    from zkv.verify import collect, explain

    cfgs = [_config_or_exit(c) for c in configs]
    verdict = collect([c.bus for c in cfgs], timeout)
    if verdict.agree and len(verdict.heartbeats) >= len(cfgs):
        hb = next(iter(verdict.heartbeats.values()))
        typer.echo(f"agree: {len(verdict.heartbeats)} nodes, {hb.keys} keys, digest {hb.digest.hex()[:16]}")
        raise typer.Exit(0)
    typer.echo("DISAGREE")
    for line in explain(verdict, len(cfgs)):
        typer.echo(line)
    raise typer.Exit(1)


@app.command()
def status(config: Annotated[str, typer.Argument(help="the node's config file")]) -> None:
    """One node's view of replication: keys, version vector, peers (from its catch-up socket)."""
    import json as _json

    import msgpack

    from zkv.bus import ask
    from zkv.verify import collect

    cfg = _config_or_exit(config)
    v = collect([cfg.bus], timeout=3.0)
    hb = v.heartbeats.get(cfg.id)
    if hb is None:
        typer.echo(f"zkv: no heartbeat from {cfg.id} on {cfg.bus}: is it running?", err=True)
        raise typer.Exit(1)
    reply = ask(hb.catchup, [wire.INFO])
    if not reply or reply[0] != wire.INFO:
        typer.echo(f"zkv: {cfg.id} did not answer on {hb.catchup}", err=True)
        raise typer.Exit(1)
    typer.echo(_json.dumps(msgpack.unpackb(reply[1], raw=False), indent=2, sort_keys=True))


def main() -> None:  # pragma: no cover - console entry
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
