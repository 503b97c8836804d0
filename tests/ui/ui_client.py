"""The pages through TestClient as a browser uses them: a form's CSRF token, signing in."""

from __future__ import annotations

import re

from factories import PASSWORD
from fastapi.testclient import TestClient


def csrf_token(html: str) -> str:
    found = re.search(r'name="csrftoken" value="([^"]+)"', html)
    assert found, html
    return found.group(1)


def sign_in(client: TestClient, email: str, password: str = PASSWORD) -> None:
    token = csrf_token(client.get("/ui/sign-in").text)
    answer = client.post("/ui/sign-in", data={"email": email, "password": password,
                                              "csrftoken": token}, follow_redirects=False)
    assert answer.status_code == 303, answer.text
