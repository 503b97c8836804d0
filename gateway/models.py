"""Every table of every domain, imported once so that Alembic and the app see one MetaData."""

from consortium import models as consortium_models
from consortium.base import Base
from gateway.jobs import cluster_status as cluster_status_models
from gateway.jobs import models as jobs_models
from gateway.webhooks import models as webhooks_models
from quotas import models as quotas_models

metadata = Base.metadata

__all__ = ["cluster_status_models", "consortium_models", "jobs_models", "metadata",
           "quotas_models", "webhooks_models"]
