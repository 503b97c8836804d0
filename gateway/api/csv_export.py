"""CSV answers (the usage API's exports and the pages' tables): rows streamed as they are
written."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator, Sequence

from fastapi.responses import StreamingResponse

CSV = "text/csv"


def csv_response(rows: Iterable[Sequence[object]], filename: str) -> StreamingResponse:
    def lines() -> Iterator[str]:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        for row in rows:
            writer.writerow(row)
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()

    return StreamingResponse(lines(), media_type=f"{CSV}; charset=utf-8",
                             headers={"Content-Disposition": f'attachment; filename="{filename}"'})
