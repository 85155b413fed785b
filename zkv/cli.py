"""The ``zkv`` command line: thin wrappers that parse options and call into the modules.

    zkv node CONFIG              run one node (frontend + store processes)
    zkv tail CONFIG|ENDPOINT...  print the replication stream as it happens
    zkv verify CONFIG...         do these nodes hold identical data? (exit 0 yes, 1 no)
    zkv status CONFIG|ADDR...    one table of the cluster (--json, --watch, --max-lag-ms)
    zkv keygen PATH              a CURVE key pair: PATH.secret and PATH.public
    zkv init --hosts A,B,C       one config per node of a new cluster (--nodes N: one host)
    zkv sim [--seconds S]        the deterministic simulator: seeded schedules of overlapping faults

On a cluster with keys, the tools reach a node with the key pair of the config they are given;
``zkv tail`` given bare tcp:// endpoints, with ``--cert PATH`` (a node's ``.secret``) and, unless
the node is the certificate's own, ``--server-key`` (the node's ``.public`` or its Z85 text).
(``--key`` is tail's key filter.)
"""

from __future__ import annotations

import sys
from typing import Annotated, Optional

import typer

from zkv.bus import OPEN, Access, config_access
from zkv.config import Config, ConfigError, load_config
from zkv.curve import KeyFileError, keygen as write_keypair, load_keypair, load_public

# Markdown help: a docstring's line breaks are reflowed, not kept (they broke help mid-sentence).
app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode="markdown",
                  help="zkv: a replicated key-value store.")


def _config_or_exit(path: str) -> Config:
    try:
        return load_config(path)
    except ConfigError as exc:
        typer.echo(f"zkv: {exc}", err=True)
        raise typer.Exit(2) from None


CertOpt = Annotated[Optional[str], typer.Option(
    "--cert", help="for bare endpoints on a cluster with keys: a node's .secret certificate")]
ServerKeyOpt = Annotated[Optional[str], typer.Option(
    "--server-key", help="the reached node's .public certificate or Z85 key (default: --cert's own)")]


def _bare_access(cert: str | None, server_key: str | None) -> Access:
    if cert is None:
        if server_key is not None:
            typer.echo("zkv: --server-key needs --cert", err=True)
            raise typer.Exit(2)
        return OPEN
    try:
        pair = load_keypair(cert, "--cert")
        server = load_public(server_key, None, "--server-key") if server_key else pair.public
    except KeyFileError as exc:
        typer.echo(f"zkv: {exc}", err=True)
        raise typer.Exit(2) from None
    return Access(pair, server)


@app.command()
def node(config: Annotated[str, typer.Argument(help="the node's TOML config file")]) -> None:
    """Run one node: a store process and a frontend process, until SIGTERM or Ctrl-C."""
    from zkv.node import main as node_main  # also reached without Typer (zkv.entry)

    raise typer.Exit(node_main(config))


@app.command()
def tail(
    targets: Annotated[list[str], typer.Argument(help="config files or tcp:// bus endpoints")],
    all_: Annotated[bool, typer.Option("--all", help="also subscribe to the configs' peers")] = False,
    json: Annotated[bool, typer.Option("--json", help="one JSON object per event")] = False,
    count: Annotated[Optional[int], typer.Option("--count", "-n", help="exit after N events")] = None,
    cert: CertOpt = None,
    server_key: ServerKeyOpt = None,
    key_glob: Annotated[Optional[str], typer.Option("--key", help="only keys matching this glob")] = None,
    origin: Annotated[Optional[str], typer.Option("--origin", help="only events of this node (any incarnation) or origin")] = None,
    stats: Annotated[bool, typer.Option("--stats", help="one line a second: events/s per origin, each node's lag")] = False,
) -> None:
    """Print every replication event as it happens: time, origin, seq, op, key, value; and
    catch-up traffic (pulls, full transfers) as separate 'catch-up' lines."""
    from zkv.tail import Filter, tail as run_tail

    endpoints: dict[str, Access] = {}
    names: dict[str, str] = {}  # endpoint -> the node a config says is there
    for t in targets:
        if t.startswith("tcp://") or t.startswith("ipc://"):
            endpoints.setdefault(t, _bare_access(cert, server_key))
            continue
        cfg = _config_or_exit(t)
        endpoints.setdefault(cfg.bus, config_access(cfg))
        names.setdefault(cfg.bus, cfg.id)
        if all_:
            for p in cfg.peers:
                endpoints.setdefault(p.bus, config_access(cfg, p.id))
                names.setdefault(p.bus, p.id)
    typer.echo(f"# tailing {', '.join(endpoints)} (Ctrl-C to stop)", err=True)
    run_tail(list(endpoints.items()), as_json=json, limit=count,
             keep=Filter(key_glob, origin), stats=stats, expected=names)


@app.command()
def verify(
    configs: Annotated[list[str], typer.Argument(help="config files of the nodes to compare")],
    timeout: Annotated[Optional[float], typer.Option(
        help="seconds to wait for the nodes to agree, every one of them heard (default 15, "
             "giving up sooner on nodes not heard at all while the others agree)")] = None,
) -> None:
    """Exit 0 if every node has applied the same events and holds the same data, else 1."""
    from zkv.verify import UNHEARD_S, collect, explain, headline

    cfgs = [_config_or_exit(c) for c in configs]
    access = {c.id: config_access(c) for c in cfgs}
    unheard = max(UNHEARD_S, 3 * max(c.heartbeat_ms for c in cfgs) / 1000)
    verdict = collect([(c.bus, access[c.id]) for c in cfgs], timeout or 15.0,
                      None if timeout is not None else unheard)
    head = headline(verdict, [c.id for c in cfgs])
    typer.echo(head)
    if head.startswith("agree"):
        raise typer.Exit(0)
    for line in explain(verdict, len(cfgs), access):
        typer.echo(line)
    raise typer.Exit(1)


@app.command()
def status(
    targets: Annotated[list[str], typer.Argument(help="config files (a config also leads to its peers) or client HOST:PORT addresses")],
    as_json: Annotated[bool, typer.Option("--json", help="the full figures as JSON")] = False,
    watch: Annotated[bool, typer.Option("--watch", help="refresh once a second until Ctrl-C")] = False,
    max_lag_ms: Annotated[Optional[int], typer.Option("--max-lag-ms", help="exit 1 if a node lags longer")] = None,
    password: Annotated[Optional[str], typer.Option("--password", help="for client addresses: AUTH with it")] = None,
    tls: Annotated[bool, typer.Option("--tls", help="for client addresses: connect with TLS")] = False,
    cacert: Annotated[Optional[str], typer.Option("--cacert", help="with --tls: the CA to trust")] = None,
) -> None:
    """One table of the cluster: per node up/down, keys, lag, clock offset, log, memory, uptime,
    clients, and the applied events per origin.  Exit 1 if a node is down or lags too long."""
    import time as _time

    from zkv.status import ConfigSource, as_json as to_json, client_report, problems, render

    cfgs = [_config_or_exit(t) for t in targets if t.endswith(".toml") or "/" in t]
    addresses = [t for t in targets if not (t.endswith(".toml") or "/" in t)]
    source = ConfigSource(cfgs) if cfgs else None

    def gather() -> list:
        reports = source.reports() if source is not None else []
        seen = {r.name for r in reports}
        for a in addresses:
            r = client_report(a, password, tls, cacert)
            if r.name not in seen:
                reports.append(r)
        return reports

    if watch and not as_json:
        from rich.live import Live

        reports = gather()
        try:
            with Live(render(reports, max_lag_ms), refresh_per_second=4) as live:
                while True:
                    _time.sleep(1.0)
                    reports = gather()
                    live.update(render(reports, max_lag_ms))
        except KeyboardInterrupt:
            pass
        raise typer.Exit(1 if problems(reports, max_lag_ms) else 0)
    try:
        while True:
            reports = gather()
            if as_json:
                typer.echo(to_json(reports, max_lag_ms))
            else:
                from rich.console import Console

                Console().print(render(reports, max_lag_ms))
            if not watch:
                break
            _time.sleep(1.0)
    except KeyboardInterrupt:
        pass
    raise typer.Exit(1 if problems(reports, max_lag_ms) else 0)


@app.command()
def keygen(
    path: Annotated[str, typer.Argument(help="writes PATH.secret (mode 0600) and PATH.public")],
    force: Annotated[bool, typer.Option("--force", help="replace existing files")] = False,
) -> None:
    """Make a CURVE key pair for a node, in ZeroMQ's certificate format."""
    try:
        pub, sec = write_keypair(path, force=force)
    except (KeyFileError, OSError) as exc:
        typer.echo(f"zkv: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"wrote {sec} (keep it on this node only) and {pub} (give it to the peers)")


@app.command()
def init(
    hosts: Annotated[Optional[str], typer.Option("--hosts", help="HOST1,HOST2,...: one node on each")] = None,
    nodes: Annotated[Optional[int], typer.Option("--nodes", help="N nodes on 127.0.0.1, distinct ports")] = None,
    directory: Annotated[str, typer.Option("--dir", help="where the configs (and keys) go")] = ".",
    curve: Annotated[bool, typer.Option("--curve", help="a key pair per node: CURVE on the bus")] = False,
    password: Annotated[Optional[str], typer.Option(
        "--password", metavar="[VALUE]",
        help="a client password in every config: VALUE, or a generated one without it "
             "(--password=VALUE for one that starts with '-')")] = None,
    port: Annotated[int, typer.Option(help="client port (the first, with several nodes on a host)")] = 7000,
    bus_port: Annotated[int, typer.Option(help="bus port (likewise)")] = 7100,
    force: Annotated[bool, typer.Option("--force", help="replace existing files")] = False,
) -> None:
    """Write one ready config per node: ids, addresses, data directories, peers (and keys)."""
    from pathlib import Path

    from zkv.init import InitError, plan, write

    if (hosts is None) == (nodes is None):
        typer.echo("zkv: give exactly one of --hosts HOST1,HOST2,... and --nodes N", err=True)
        raise typer.Exit(2)
    host_list = hosts.split(",") if hosts is not None else ["127.0.0.1"] * (nodes or 0)
    if nodes is not None and nodes < 1:
        typer.echo("zkv: --nodes must be at least 1", err=True)
        raise typer.Exit(2)
    try:
        planned = plan(host_list, port, bus_port)
        cluster = write(Path(directory), planned, curve, password, force)
    except (InitError, KeyFileError, OSError) as exc:
        typer.echo(f"zkv: {exc}", err=True)
        raise typer.Exit(2) from None
    d = Path(directory)
    for n in planned:
        extra = f", {d / n.id}.secret (stays on that machine)" if curve else ""
        typer.echo(f"{n.id}: {d / n.id}.toml{extra}  clients {n.listen}, bus {n.bus}")
    if cluster.password is not None:
        typer.echo(f"client password (in every config): {cluster.password}")
    typer.echo("start each node with: zkv node <its .toml>")


@app.command()
def sim(
    seed: Annotated[Optional[int], typer.Option(help="run (replay) this one seed")] = None,
    first: Annotated[int, typer.Option(help="first seed of a long run")] = 0,
    seeds: Annotated[int, typer.Option(help="how many seeds at most")] = 1_000_000,
    seconds: Annotated[float, typer.Option(help="stop a long run after this long")] = 60.0,
    keep: Annotated[Optional[str], typer.Option(help="with --seed: only these faults (indices, comma-separated)")] = None,
    nodes: Annotated[int, typer.Option(help="replicas, 3 to 7 (0: 5 for every third seed, else 3)")] = 0,
    faults: Annotated[int, typer.Option(help="faults drawn per schedule")] = 4,
    no_shrink: Annotated[bool, typer.Option("--no-shrink", help="report failures as drawn")] = False,
    workers: Annotated[int, typer.Option(help="processes (default: one per CPU)")] = 0,
) -> None:
    """Run the simulator: each seed is a schedule of client operations and overlapping faults
    (crashes, torn logs, damaged snapshots, partitions, pauses, clock skew) through the real
    replica core, healed and checked.  A failure prints its shrunk schedule and a replay command."""
    from zkv.sim.run import many, replay_command, run, shrink

    kw = {"nodes": nodes, "faults": faults}
    if seed is not None:
        chosen = {int(i) for i in keep.split(",") if i.strip()} if keep is not None else None
        r = run(seed, chosen, **kw)
        for line in r.trace:
            typer.echo(line)
        typer.echo(f"seed {seed}: {r.ops} operations ({r.acked} acknowledged), faults: "
                   + "; ".join(str(f) for f in r.faults))
        for v in r.violations:
            typer.echo(f"VIOLATION {v}")
        raise typer.Exit(0 if r.ok else 1)
    import os

    done, fails, secs = many(range(first, first + seeds), seconds, workers or os.cpu_count() or 1, **kw)
    typer.echo(f"{done} schedules in {secs:.1f}s ({done / max(secs, 1e-9):.1f}/s), {len(fails)} failed")
    for r in fails[:5]:
        small = r if no_shrink else shrink(r.seed, r, **kw)
        typer.echo(f"seed {r.seed}: {small.violations[0][:500]}")
        typer.echo("  faults: " + "; ".join(str(f) for f in small.faults))
        typer.echo("  replay: " + replay_command(r.seed, small, {k: v for k, v in kw.items() if v != {"nodes": 0, "faults": 4}[k]}))
    raise typer.Exit(1 if fails else 0)


def optional_password(argv: list[str]) -> list[str]:
    """``zkv init --password`` without a value asks for a generated one: Typer options take a
    value or none, not either, so a bare ``--password`` (last, or before another option) gets
    the GENERATE marker here."""
    if "init" not in argv[1:2]:
        return argv
    out = list(argv)
    for i, a in enumerate(out):
        if a == "--password" and (i + 1 == len(out) or out[i + 1].startswith("-")):
            from zkv.init import GENERATE
            out.insert(i + 1, GENERATE)
            break
    return out


def main() -> None:  # every command line but ``zkv node CONFIG`` (zkv.entry)
    sys.argv = optional_password(sys.argv)
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
