"""The job actions a caller asks for, as one object for the routes (`JobServiceDep`): each use
case lives in its own module, on the shared base gateway/jobs/actions.py.

- submission (gateway/jobs/submission.py): submit, with its Idempotency-Key, and quote;
- cancellation (gateway/jobs/cancel.py);
- output and events, read or followed (gateway/jobs/streams.py);
- files of a member's or a job's directory (gateway/jobs/files.py).
"""

from __future__ import annotations

from gateway.jobs.cancel import Cancellation
from gateway.jobs.files import Files
from gateway.jobs.streams import Streams
from gateway.jobs.submission import Submissions


class JobService(Submissions, Cancellation, Streams, Files):
    """Built once per app (gateway.api.app) on its database, clusters and job settings."""
