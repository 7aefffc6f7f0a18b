"""Care of a running cluster: what is at risk (``status``), checking and mending
(``scrub``, ``fsck``, ``repair``, ``gc``), and the chunk servers' life (``node``).

Each command: ``add_NAME(sub)`` declares its parser (``shoal/cli.py`` calls them in the
order ``shoal --help`` lists them) and ``cmd_NAME(args)`` runs it."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from storaged.metaclient import MetaClient
from storaged.rpc import RpcError

from .. import display
from .common import (
    EPILOG,
    EXIT_FAILURE,
    EXIT_OK,
    EXIT_UNHEALTHY,
    EXIT_USAGE,
    access_flags,
    with_meta_access,
)


def add_status(sub: Any) -> None:
    p = sub.add_parser(
        "status",
        help="is my data safe? servers, volumes, repair and scrub at a glance",
        description="Ask the meta role for its map of the cluster: every chunk server (up or "
        "down, zone, chunks, use, seconds since its last heartbeat, the "
        "scrubber's progress), every volume and snapshot (capacity, use, R and "
        "health: ok, degraded, under-replicated or missing — see "
        "docs/operations.md), and the repair pass. Every server the map calls up "
        "is also asked directly, so one that died a moment ago shows at once. "
        "Exit code 3 when any data is at risk, with the reasons listed.",
        epilog=EPILOG,
    )
    p.add_argument(
        "--json",
        action="store_true",
        help="print the whole report as JSON (the same verdict as the table)",
    )
    access_flags(p)
    p.set_defaults(handler=cmd_status)


@with_meta_access
def cmd_status(args: argparse.Namespace, meta: str, secret: bytes) -> int:
    from .. import status

    try:
        report = status.gather(meta, secret)
    except RpcError as exc:
        print(f"shoal status: the meta role at {meta} does not answer: {exc}", file=sys.stderr)
        return EXIT_UNHEALTHY
    print(json.dumps(report, indent=2) if args.json else status.render(report))
    return EXIT_OK if report["healthy"] else EXIT_UNHEALTHY


def add_scrub(sub: Any) -> None:
    p = sub.add_parser(
        "scrub",
        help="show each chunk server's scrubber, or scrub every disk now",
        description="Every chunk server re-reads and verifies its chunks in the background "
        "(its --scrub-rate, a pass every --scrub-interval); a corrupted copy is "
        "quarantined and repair replaces it. Without --now: where each scrubber "
        "is. With --now: start a pass on every up server and wait for them all "
        "(progress and ETA on a terminal; Ctrl-C stops waiting, not the passes). "
        "Exit code 3 when the passes this started found corrupted chunks.",
        epilog=EPILOG,
    )
    p.add_argument("--now", action="store_true", help="start a pass on every server and wait")
    p.add_argument(
        "--timeout",
        type=float,
        metavar="SECONDS",
        help="with --now: give up waiting after this long (default: no limit)",
    )
    p.add_argument("--json", action="store_true")
    access_flags(p)
    p.set_defaults(handler=cmd_scrub)


@with_meta_access
def cmd_scrub(args: argparse.Namespace, meta: str, secret: bytes) -> int:
    from .. import scrub

    progress = display.ProgressLine(enabled=not args.json)
    try:
        rows = scrub.run(meta, secret, now=args.now, timeout=args.timeout, progress=progress)
    except TimeoutError as exc:
        print(f"shoal scrub: {exc.args[0]}", file=sys.stderr)
        print(scrub.render(exc.args[1]))
        return EXIT_FAILURE
    except RpcError as exc:
        print(f"shoal scrub: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    print(json.dumps(rows, indent=2) if args.json else scrub.render(rows))
    if any("error" in r for r in rows):
        return EXIT_FAILURE
    found = scrub.bad_found_now(rows)
    if found:
        print(
            f"shoal scrub: {found} corrupted chunks found and quarantined; repair replaces "
            "them from good copies ('shoal repair' shows it)",
            file=sys.stderr,
        )
        return EXIT_UNHEALTHY
    return EXIT_OK


def add_gc(sub: Any) -> None:
    p = sub.add_parser(
        "gc",
        help="remove chunks that no file, snapshot or pending write references",
        description="One garbage collection pass now: list every live chunk server's "
        "chunks, ask the meta role which are referenced by no volume, snapshot or "
        "write in progress, and delete those last written more than --grace "
        "seconds ago. The meta role also runs a pass every --gc-interval.",
        epilog=EPILOG,
    )
    p.add_argument(
        "--grace",
        type=float,
        default=3600.0,
        metavar="SECONDS",
        help="keep unreferenced chunks younger than this (default 3600, min 10)",
    )
    p.add_argument("--dry-run", action="store_true", help="count what would go; delete nothing")
    p.add_argument("--json", action="store_true")
    access_flags(p)
    p.set_defaults(handler=cmd_gc)


@with_meta_access
def cmd_gc(args: argparse.Namespace, meta: str, secret: bytes) -> int:
    import trio

    from storaged.gc import MIN_GRACE, collect
    from storaged.rpc import RpcClient

    if args.grace < MIN_GRACE:
        print(f"shoal gc: --grace must be at least {MIN_GRACE:g} seconds", file=sys.stderr)
        return EXIT_USAGE

    async def go() -> Any:
        async with RpcClient(secret) as client:
            return await collect(MetaClient(client, meta), args.grace, dry_run=args.dry_run)

    try:
        report = trio.run(go)
    except RpcError as exc:
        print(f"shoal gc: {exc.message} ({exc.code})", file=sys.stderr)
        return EXIT_FAILURE
    if args.json:
        print(json.dumps(report.as_dict(), indent=2))
    else:
        verb = "would delete" if args.dry_run else "deleted"
        print(
            f"{report.servers} servers, {report.listed} chunks listed, {report.unreferenced} "
            f"unreferenced, {verb} {report.deleted} ({display.size(report.bytes_freed)}), kept "
            f"{report.kept_young} younger than {args.grace:g}s"
        )
        for failure in report.failed_servers:
            print(f"  not finished: {failure}")
    return EXIT_FAILURE if report.failed_servers else EXIT_OK


def add_repair(sub: Any) -> None:
    p = sub.add_parser(
        "repair",
        help="show repair progress, or run a repair pass now",
        description="Repair brings every referenced chunk back to its volume's replica count "
        "(after a server has been down longer than the meta role's "
        "--repair-down-grace, or a copy was found bad). Without --now: the state "
        "of the last pass. With --now: start a pass and follow it to the end. "
        "Exit code 3 when chunks are missing (no good copy on any live server).",
        epilog=EPILOG,
    )
    p.add_argument("--now", action="store_true", help="run a pass now and wait for it")
    p.add_argument(
        "--timeout",
        type=float,
        default=3600.0,
        metavar="SECONDS",
        help="with --now: give up waiting after this long (default 3600)",
    )
    p.add_argument("--json", action="store_true")
    access_flags(p)
    p.set_defaults(handler=cmd_repair)


@with_meta_access
def cmd_repair(args: argparse.Namespace, meta: str, secret: bytes) -> int:
    import trio

    from storaged.rpc import RpcClient

    progress = display.ProgressLine(enabled=not args.json)

    async def go() -> dict[str, Any]:
        async with RpcClient(secret) as client:
            meta_client = MetaClient(client, meta)
            status = await meta_client.repair_status()
            if not args.now:
                return status
            before = status["passes"]
            await meta_client.repair_run()
            deadline = time.monotonic() + args.timeout
            while time.monotonic() < deadline:
                status = await meta_client.repair_status()
                if status["passes"] > before and not status["running"]:
                    return status
                if status["running"]:
                    progress.show(_repair_progress(status))
                await trio.sleep(0.5)
            raise TimeoutError(
                f"the pass did not finish within {args.timeout:g}s; "
                "'shoal repair' shows where it is"
            )

    try:
        status = trio.run(go)
    except (RpcError, TimeoutError) as exc:
        progress.done()
        print(f"shoal repair: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    progress.done()
    if args.json:
        print(json.dumps(status, indent=2))
    else:
        print(_repair_progress(status))
        if status["missing"]:
            print(
                f"MISSING: {status['missing']} chunks have no good copy on any live server "
                f"(e.g. {', '.join(c[:16] for c in status['missing_examples'][:3])}); "
                "bring back the servers that were lost",
                file=sys.stderr,
            )
        if status["last_error"]:
            print(f"last error: {status['last_error']}", file=sys.stderr)
    if status["missing"]:
        return EXIT_UNHEALTHY
    return EXIT_FAILURE if status["failed"] else EXIT_OK


def _repair_progress(s: dict[str, Any]) -> str:
    state = "running" if s["running"] else ("done" if s["passes"] else "no pass yet")
    eta = display.eta(s["checked"], s["total"], s["started"]) if s["running"] else ""
    return (
        f"repair {state}: checked {s['checked']}/{s['total']}, under-replicated "
        f"{s['under_replicated']}, repaired {s['repaired']} ({s['copies_made']} copies, "
        f"{display.size(s['bytes_copied'])}), missing {s['missing']}, failed {s['failed']}{eta}"
    )


def add_node(sub: Any) -> None:
    p = sub.add_parser(
        "node",
        help="list chunk servers, drain one, or remove a drained one",
        description="'list': every chunk server the meta role knows, up or down, draining "
        "or not. 'drain ID': stop new writes to the server and copy every chunk "
        "it holds to others until each has its R copies elsewhere (waits, with "
        "progress), then says whether it can be removed. 'undrain ID': take it "
        "back into service. 'remove ID': forget a drained server after it was "
        "stopped; refused while anything would be lost.",
        epilog=EPILOG,
    )
    p.add_argument("action", choices=["list", "drain", "undrain", "remove"])
    p.add_argument("server", nargs="?", help="the server id (see 'shoal node list')")
    p.add_argument(
        "--timeout",
        type=float,
        default=3600.0,
        metavar="SECONDS",
        help="drain: give up waiting after this long (default 3600)",
    )
    p.add_argument("--json", action="store_true")
    access_flags(p)
    p.set_defaults(handler=cmd_node)


@with_meta_access
def cmd_node(args: argparse.Namespace, meta: str, secret: bytes) -> int:
    import trio

    from storaged.repair import unsafe_to_remove
    from storaged.rpc import RpcClient

    if args.action != "list" and not args.server:
        print(
            f"shoal node {args.action}: give the server ID (see 'shoal node list')", file=sys.stderr
        )
        return EXIT_USAGE
    progress = display.ProgressLine(enabled=not args.json)

    async def drain(rpc: RpcClient, client: MetaClient) -> int:
        before = (await client.repair_status())["passes"]
        await client.cluster_drain(args.server, True)
        deadline = time.monotonic() + args.timeout
        while time.monotonic() < deadline:
            status = await client.repair_status()
            if status["passes"] > before and not status["running"]:
                unsafe = await unsafe_to_remove(rpc, client, args.server)
                if unsafe == 0:
                    return 0
                before = status["passes"]
                await client.repair_run()  # copies still missing: once more
            progress.show(f"draining: {_repair_progress(status)}")
            await trio.sleep(0.5)
        return await unsafe_to_remove(rpc, client, args.server)

    async def go() -> Any:
        async with RpcClient(secret) as rpc:
            client = MetaClient(rpc, meta)
            if args.action == "list":
                return await client.cluster_servers()
            if args.action == "undrain":
                return await client.cluster_drain(args.server, False)
            if args.action == "remove":
                unsafe = await unsafe_to_remove(rpc, client, args.server)
                if unsafe:
                    raise RuntimeError(f"{unsafe} chunks would lose copies; drain it first")
                return await client.cluster_remove(args.server)
            return await drain(rpc, client)

    try:
        result = trio.run(go)
    except (RpcError, RuntimeError) as exc:
        progress.done()
        print(f"shoal node {args.action}: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    if args.action == "list":
        if args.json:
            print(json.dumps(result, indent=2))
        else:
            print(
                f"{'ID':<34} {'ADDRESS':<24} {'ZONE':<8} {'STATE':<9} {'USED':>10} "
                f"{'FREE':>10} CHUNKS"
            )
            for r in result:
                state = r["state"] + ("/drain" if r["draining"] else "")
                print(
                    f"{r['id']:<34} {r['address']:<24} {r['zone'] or '-':<8} {state:<9} "
                    f"{display.size(r['used']):>10} {display.size(r['free']):>10} {r['chunks']}"
                )
        return EXIT_OK
    if args.action == "drain":
        progress.done()
        if result:
            print(
                f"{args.server} is draining; {result} chunks still lack their copies "
                "elsewhere (repair keeps working on it; run drain again to wait)"
            )
            return EXIT_FAILURE
        print(
            f"{args.server} is drained: every chunk it holds has its copies elsewhere; stop "
            f"it, then 'shoal node remove {args.server}'"
        )
        return EXIT_OK
    print(
        json.dumps(result, indent=2)
        if args.action == "undrain"
        else f"removed {args.server}"
        if result
        else f"no server {args.server}"
    )
    return EXIT_OK


def add_fsck(sub: Any) -> None:
    p = sub.add_parser(
        "fsck",
        help="check a volume's metadata, and that its chunks have copies",
        description="Check VOLUME: every entry names an existing inode, link counts match, "
        "every file is reachable from the root, the cached usage is right, and "
        "every chunk its files use has a copy on at least one live chunk server. "
        "Read-only unless --repair. Exit code 3 when anything is wrong.",
        epilog=EPILOG,
    )
    p.add_argument("volume")
    p.add_argument(
        "--repair",
        action="store_true",
        help="first mend values no mount can show (uid/gid outside 0..2^32-2 "
        "become 65534, a mode without a valid file type gets the type the "
        "inode has, device numbers and sizes out of range); other problems "
        "are only reported",
    )
    p.add_argument("--json", action="store_true")
    access_flags(p)
    p.set_defaults(handler=cmd_fsck)


@with_meta_access
def cmd_fsck(args: argparse.Namespace, meta: str, secret: bytes) -> int:
    import trio

    from storaged.data.placement import Server
    from storaged.repair import locations
    from storaged.rpc import RpcClient

    async def go() -> dict[str, Any]:
        async with RpcClient(secret) as client:
            meta_client = MetaClient(client, meta)
            repaired = (
                (await meta_client.fsck_repair(args.volume))["repaired"] if args.repair else []
            )
            report = await meta_client.fsck_check(args.volume)
            report["repaired"] = repaired
            ids: list[str] = []
            while True:
                page = await meta_client.fsck_chunks(args.volume, ids[-1] if ids else None, 10_000)
                ids += page
                if len(page) < 10_000:
                    break
            live = [
                Server(r["id"], r["address"], r["zone"], r["capacity"], r["free"], True)
                for r in await meta_client.cluster_servers()
                if r["state"] == "up"
            ]
            holders = await locations(client, live)
            missing = [c for c in ids if not holders.get(c)]
            report["chunks"] = len(ids)
            report["chunks_without_copy"] = len(missing)
            report["problems"] += [
                f"chunk {c} has no copy on any live chunk server" for c in missing[:100]
            ]
            return report

    try:
        report = trio.run(go)
    except RpcError as exc:
        print(f"shoal fsck: {exc.message} ({exc.code})", file=sys.stderr)
        return EXIT_FAILURE
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(
            f"volume {report['volume']}: {report['inodes']} inodes, {report['entries']} entries, "
            f"{report['orphans']} open orphans, {report['chunks']} chunks "
            f"({report['chunks_without_copy']} without a copy)"
        )
        for line in report["repaired"]:
            print(f"  REPAIRED: {line}")
        for problem in report["problems"]:
            print(f"  PROBLEM: {problem}")
        print("clean" if not report["problems"] else f"{len(report['problems'])} problems")
    return EXIT_UNHEALTHY if report["problems"] else EXIT_OK
