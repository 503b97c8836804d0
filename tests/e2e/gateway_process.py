"""The gateway as a process of its own, for the fault tests: `python gateway_process.py PORT`,
its settings as JSON in HPCGW_E2E_SETTINGS (the secret included), serving the real app under
uvicorn on 127.0.0.1:PORT.

With HPCGW_E2E_DIE_AFTER_SBATCH=1 it SIGKILLs itself the moment the scheduler's submit has
returned: sbatch has answered with the job's id and the gateway has not stored it yet. It first
prints `{"sbatch_returned": "<id>"}` on stdout. This hook lives here, in the test, never in
the gateway's code.
"""

from __future__ import annotations

import json
import os
import signal
import sys

import uvicorn

from gateway.api.app import create_app
from gateway.jobs.runtime import build_schedulers
from gateway.logging import configure_logging
from gateway.settings import Settings
from schedulers.base import Scheduler
from schedulers.models import Identity, JobSpec, Submitted


def die_after_submit(scheduler: Scheduler) -> None:
    submit = scheduler.submit

    async def submit_then_die(identity: Identity, spec: JobSpec) -> Submitted:
        submitted = await submit(identity, spec)
        print(json.dumps({"sbatch_returned": submitted.scheduler_id}), flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
        return submitted  # never reached

    scheduler.submit = submit_then_die  # type: ignore[method-assign]


def main() -> None:
    settings = Settings(**json.loads(os.environ["HPCGW_E2E_SETTINGS"]))
    # the service's own logs (`hpcgw serve`): bounded JSON tracebacks, not rich's rendering,
    # which takes seconds of the event loop per error on a busy machine
    configure_logging(settings.log_level, settings.log_json)
    schedulers = build_schedulers(settings)
    if os.environ.get("HPCGW_E2E_DIE_AFTER_SBATCH") == "1":
        for scheduler in schedulers.values():
            die_after_submit(scheduler)
    app = create_app(settings, schedulers=schedulers)
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")


if __name__ == "__main__":
    main()
