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
    """Allocated, used, held and available SU; the burn rate and when it runs out; energy and
    carbon, measured or estimated."""
    with gateway(profile) as client:
        slug = member_slug(client, member)
        report: dict[str, Any] = client.call("GET", f"{API}/members/{slug}/usage")
        # energy and carbon over the same current allocations
        since = min((a["starts_at"] for a in report["allocations"]), default=None)
        report["footprint"] = client.call("GET", f"{API}/members/{slug}/footprint",
                                          params={"since": since} if since else None)
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
    _footprint(report["footprint"])
    if report["by_project"]:
        table(("PROJECT", "USED_SU", "HELD_SU"),
              [(line["label"] or line["key"], line["used"]["su"], line["held"]["su"])
               for line in report["by_project"]])


LABELS = {"measured": "measured by Slurm", "estimated": "estimated (Green Algorithms)",
          "partly_measured": "partly measured, partly estimated",
          "not_estimated": "no figure (partition without hardware figures)"}


def _footprint(found: dict[str, Any]) -> None:
    """Energy and carbon with their label: an estimate never reads as a measurement."""
    total = found["total"]
    energy, carbon, eq = total["energy_kwh"], total["carbon_g"], total["equivalents"]
    typer.echo(f"energy {energy['total']} kWh (measured {energy['measured']}, estimated "
               f"{energy['estimated']}), carbon {carbon['total']} gCO2e: "
               f"{LABELS[total['label']]}; about {eq['car_km']} km by car, "
               f"{eq['household_hours']} h of a household's electricity")
    if found["breakdowns"]["month"]:
        table(("MONTH", "JOBS", "KWH", "GCO2E", "FIGURES"),
              [(line["key"], line["footprint"]["jobs"],
                line["footprint"]["energy_kwh"]["total"],
                line["footprint"]["carbon_g"]["total"], line["footprint"]["label"])
               for line in found["breakdowns"]["month"]])
