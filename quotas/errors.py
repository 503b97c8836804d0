"""The quota refusal: a business error with the numbers (the API maps it to 403)."""

from __future__ import annotations

from consortium.errors import DomainError
from consortium.texts import Sentence, translatable
from quotas.rates import format_su, to_su


class QuotaExceeded(DomainError):
    """A hold that does not fit. Carries requested, available and held, in milli-SU and SU."""

    code = "quota-exceeded"
    title = translatable("Quota exceeded")

    def __init__(self, *, requested_msu: int, available_msu: int, held_msu: int,
                 open_holds: int) -> None:
        super().__init__(
            Sentence("requested %(requested)s, available %(available)s, held %(held)s by "
                     "%(holds)s pending or running job(s)", requested=format_su(requested_msu),
                     available=format_su(available_msu), held=format_su(held_msu),
                     holds=open_holds),
            requested_msu=requested_msu,
            requested_su=str(to_su(requested_msu)),
            available_msu=available_msu,
            available_su=str(to_su(available_msu)),
            held_msu=held_msu,
            held_su=str(to_su(held_msu)),
            open_holds=open_holds,
        )
        self.requested_msu = requested_msu
        self.available_msu = available_msu
        self.held_msu = held_msu
        self.open_holds = open_holds
