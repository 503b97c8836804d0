"""`hpcgw usage`: the member's balance, burn rate and projection, as the dashboard shows them
(sshare, sreport)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from gateway.cli.client import API, gateway, member_slug, reports_errors
from gateway.cli.output import JsonOption, ProfileOption, emit_json, table


@reports_errors
def usage(
    member: Annotated[str | None, typer.Option(help="Default: your only member.")] = None,
    profile: ProfileOption = None,
    json_: JsonOption = False,
) -> None:
    """Allocated, used, held and available SU; the burn rate and when it runs out."""
    with gateway(profile) as client:
        slug = member_slug(client, member)
        report: dict[str, Any] = client.call("GET", f"{API}/members/{slug}/usage")
    if json_:
        emit_json(report)
        return
    end = report.get("period_end")
    typer.echo(f"{slug}: {report['available']['su']} SU available of "
               f"{report['allocated']['su']} allocated ({report['percent_used'] or 0}% used), "
               f"{report['held']['su']} held by {report['open_holds']} job(s)"
               + (f"; period ends {end[:10]}" if end else ""))
    table(("WINDOW", "USED_SU", "SU_PER_DAY", "RUNS_OUT", "BEFORE_PERIOD_END"),
          [(f"{p['window_days']} days", p["used"]["su"], p["per_day"]["su"],
            (p["projected_exhaustion"] or "-")[:10],
            {True: "yes", False: "no", None: "-"}[p["before_period_end"]])
           for p in report["pace"]])
    if report["by_project"]:
        table(("PROJECT", "USED_SU", "HELD_SU"),
              [(line["label"] or line["key"], line["used"]["su"], line["held"]["su"])
               for line in report["by_project"]])
