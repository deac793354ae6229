"""``klaviyo-sync demo``: every flow both ways on a local sandbox and a fresh demo hub."""

from __future__ import annotations

import click

from engine.cli._output import emit_json, fail
from engine.errors import KlaviyoSyncError


@click.command("demo")
@click.option("--dir", "folder", default="demo-hub", show_default=True, type=click.Path(file_okay=False),
              help="Folder for the demo's hub, settings, sample data and saved sandbox state.")
@click.option("--customers", default=12, show_default=True, type=click.IntRange(3, 100_000),
              help="Sample hub Customers to generate.")
@click.option("--transactions", default=10, show_default=True, type=click.IntRange(1, 100_000),
              help="Sample hub Transactions to generate.")
@click.option("--profiles", default=12, show_default=True, type=click.IntRange(0, 100_000),
              help="Sample Klaviyo profiles to generate in the sandbox.")
@click.option("--seed", default=7, show_default=True, type=int,
              help="Seed for the ids the sandbox generates (the sample data itself is fixed).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def demo_cmd(folder: str, customers: int, transactions: int, profiles: int, seed: int, as_json: bool) -> None:
    """Run the whole integration on sample data: no Klaviyo account, no network.

    Starts the sandbox on a free loopback port, creates a hub in --dir with sample Customers and
    Transactions, puts sample profiles in the sandbox, then runs dispatch, poll and a Manual Sync
    each way, and prints what happened. The demo's files in --dir are replaced on each run; the
    hub, settings and sandbox state stay there for `hub show`, `errors` and `status`. A --dir that
    holds anything else (a real subscription's settings or hub, any other file) is refused.
    """
    from engine.demo import run_demo, runnable_command

    try:
        result = run_demo(folder, customers=customers, transactions=transactions, profiles=profiles, seed=seed)
    except KlaviyoSyncError as err:
        fail(err)
    result.command = runnable_command()
    if as_json:
        emit_json(result.to_dict())
    else:
        for line in result.lines():
            click.echo(line)


def register(group: click.Group) -> None:
    group.add_command(demo_cmd)
