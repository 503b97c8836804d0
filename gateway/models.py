"""Every table of every domain, imported once so that Alembic and the app see one MetaData."""

from consortium import models as consortium_models
from consortium.base import Base

metadata = Base.metadata

__all__ = ["consortium_models", "metadata"]
