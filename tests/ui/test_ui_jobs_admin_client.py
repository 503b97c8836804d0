"""The job and admin pages through TestClient, on the local executor: the forms' fields carry
the API's bounds, their refusals are the API's words beside the right input, a job submitted
from a page is the API's job, and only admins reach the admin pages (404 for anyone else)."""

from __future__ import annotations

import html
import json
import re
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from factories import make_member, make_project, make_user
from fastapi.testclient import TestClient
from sqlalchemy import select, update
from sqlalchemy.orm import Session
from ui_client import csrf_token, sign_in

from consortium.base import utcnow
from consortium.models import Invitation, Member, MemberStatus, Role, User
from gateway.api.app import create_app
from gateway.db import Database
from gateway.jobs.config import JobsSettings
from gateway.jobs.models import Job, JobState
from gateway.jobs.templates import seed_templates
from gateway.settings import Settings
from quotas import service as quotas
from quotas.models import AllocationKind
from schedulers.config import BillingWeights, ClusterConfig, PartitionConfig

SCRIPT = "#!/bin/bash\n#SBATCH --partition=cpu\n#SBATCH --time=5\n#SBATCH --mem=256M\ntrue\n"
ADMIN_PAGES = ["/ui/admin/members", "/ui/admin/invitations", "/ui/admin/allocations",
               "/ui/admin/ledger", "/ui/admin/audit", "/ui/admin/clusters"]


@pytest.fixture
def settings(settings: Settings, tmp_path: Path) -> Settings:
    config = ClusterConfig(
        name="local", backend="local", local_root=tmp_path / "cluster",
        work_root=str(tmp_path / "cluster" / "work" / "{unix_user}"), cpu_slots=1,
        partitions=[PartitionConfig(name="cpu", max_time_minutes=120, max_cpus_per_job=4,
                                    max_mem_mb_per_job=4096,
                                    billing=BillingWeights(gpu=1.0, cpu=0.25, mem_gb=0.0625))])
    # no tracker: it would share the test's connection from another thread; state streams
    # end after half a second (the job stays pending)
    return settings.model_copy(update={"clusters": [config], "jobs": JobsSettings(
        tracker_in_serve=False, stream_max_seconds=0.5, stream_poll_seconds=0.1)})


@pytest.fixture
def client(settings: Settings, database: Database) -> Iterator[TestClient]:
    with TestClient(create_app(settings, database=database)) as test_client:
        yield test_client


@pytest.fixture
def member(session: Session) -> Member:
    found = make_member(session, slug="acme")
    make_project(session, found, "training")
    quotas.grant(session, member_id=found.id, amount_msu=10_000_000, kind=AllocationKind.grant,
                 starts_at=utcnow() - timedelta(days=1), ends_at=utcnow() + timedelta(days=30),
                 actor="admin@consortium.test")
    seed_templates(session)
    session.commit()
    return found


def speaks(session: Session, email: str, locale: str) -> None:
    """The pages in `locale` for the person signed in as `email` (their account's choice)."""
    session.execute(update(User).where(User.email == email).values(locale=locale))
    session.commit()


def researcher_of(session: Session, member: Member) -> str:
    user = make_user(session, roles={member: Role.researcher})
    session.commit()
    return user.email


def test_template_form_fields_carry_the_parameters_bounds_and_defaults(
        client: TestClient, session: Session, member: Member) -> None:
    sign_in(client, researcher_of(session, member))
    form = client.get("/ui/submit/templates/pytorch-cpu")
    assert form.status_code == 200, form.text
    epochs = re.search(r'<input id="f-parameters-epochs"[^>]*>', form.text)
    assert epochs, form.text
    assert 'type="number"' in epochs.group(0)
    assert 'min="1"' in epochs.group(0) and 'max="1000"' in epochs.group(0)
    assert 'value="5"' in epochs.group(0)
    rate = re.search(r'<input id="f-parameters-learning_rate"[^>]*>', form.text)
    assert rate and 'step="any"' in rate.group(0)
    nodes = re.search(r'<input id="f-resources-nodes"[^>]*>', form.text)
    assert nodes and 'min="1"' in nodes.group(0) and 'max="10000"' in nodes.group(0)


def test_template_form_refusals_are_the_apis_beside_the_input_in_the_viewers_language(
        client: TestClient, session: Session, member: Member) -> None:
    email = researcher_of(session, member)
    sign_in(client, email)
    for locale, integer, at_least, positive in [
            ("fr", "doit être un nombre entier", "doit valoir au moins 64",
             "doit valoir au moins 1"),
            ("en", "must be an integer", "must be at least 64", "must be at least 1")]:
        speaks(session, email, locale)
        form = {"project": "acme/training", "action": "quote",
                "parameters.epochs": "abc", "parameters.samples": "10",
                "resources.partition": "cpu", "resources.mem_mb": "512",
                "resources.time_limit_minutes": "5"}
        # the template's own checks, then pydantic's bound on a resource (checked first)
        errors = _refusals(client, form)
        assert errors.get("parameters-epochs") == integer, errors
        assert errors.get("parameters-samples") == at_least, errors
        errors = _refusals(client, {**form, "parameters.epochs": "2",
                                    "parameters.samples": "64", "resources.nodes": "0"})
        assert errors == {"resources-nodes": positive}, errors


def _refusals(client: TestClient, form: dict[str, str]) -> dict[str, str]:
    """The messages beside the inputs of the template form posted with `form` (a 422),
    by input, as the page shows them."""
    page = client.get("/ui/submit/templates/pytorch-cpu")
    answer = client.post("/ui/submit/templates/pytorch-cpu",
                         data={"csrftoken": csrf_token(page.text), **form})
    assert answer.status_code == 422, answer.text
    assert f'value="{form["parameters.epochs"]}"' in answer.text  # the form comes back as typed
    return {name: html.unescape(text)
            for name, text in re.findall(r'id="([\w-]+)-error">([^<]*)<', answer.text)}


def test_script_form_quotes_then_submits_and_shows_directive_lines(
        client: TestClient, session: Session, member: Member) -> None:
    sign_in(client, researcher_of(session, member))
    page = client.get("/ui/submit/script")
    token = csrf_token(page.text)
    bad = "#!/bin/bash\n#SBATCH --partition=cpu\n#SBATCH --wckey=x\necho hi\n"
    refused = client.post("/ui/submit/script", data={
        "csrftoken": token, "project": "acme/training", "script": bad, "action": "quote"})
    assert refused.status_code == 422, refused.text
    shown = re.search(r'id="script-error">([^<]*)<', refused.text)
    assert shown, refused.text
    assert html.unescape(shown.group(1)).startswith(
        "ligne 3 : #SBATCH --wckey n'est pas accepté : la passerelle ne la prend pas ; "
        "acceptées : --time,"), shown.group(1)
    body = {"csrftoken": token, "project": "acme/training", "script": SCRIPT, "name": "hello"}
    quoted = client.post("/ui/submit/script", data={**body, "action": "quote"})
    assert quoted.status_code == 200, quoted.text
    amount = re.search(r'<data id="quote-amount" value="(\d+)"', quoted.text)
    assert amount and int(amount.group(1)) > 0
    assert 'id="submit-button"' in quoted.text
    key = re.search(r'name="submission_key" value="([^"]+)"', quoted.text)
    assert key
    body["submission_key"] = key.group(1)
    submitted = client.post("/ui/submit/script", data={**body, "action": "submit"},
                            follow_redirects=False)
    assert submitted.status_code == 303, submitted.text
    # the form sent again (a double click): the API's idempotency answers the same job
    again = client.post("/ui/submit/script", data={**body, "action": "submit"},
                        follow_redirects=False)
    assert again.headers["location"] == submitted.headers["location"]
    public_id = submitted.headers["location"].rsplit("/", 1)[1]
    job = session.scalars(select(Job).where(Job.public_id == public_id)).one()
    assert session.scalars(select(Job.public_id)).all() == [public_id]
    assert job.quote_msu == int(amount.group(1))  # the quote shown is the hold taken
    detail = client.get(submitted.headers["location"])
    assert detail.status_code == 200
    assert f'<data value="{job.quote_msu}">' in detail.text
    assert 'data-stream="/ui/jobs/' in detail.text


def submit_script(client: TestClient, project: str) -> tuple[int, str]:
    """Submit SCRIPT from the script form: the status, and the job's id (or the page)."""
    page = client.get("/ui/submit/script")
    answer = client.post("/ui/submit/script", data={
        "csrftoken": csrf_token(page.text), "project": project, "script": SCRIPT,
        "action": "submit"}, follow_redirects=False)
    if answer.status_code == 303:
        return 303, answer.headers["location"].rsplit("/", 1)[1]
    return answer.status_code, answer.text


def test_researcher_gets_404_on_admin_pages_and_on_another_members_job(
        client: TestClient, session: Session, member: Member) -> None:
    sign_in(client, researcher_of(session, member))
    status, acme_job = submit_script(client, "acme/training")
    assert status == 303, acme_job
    assert client.get(f"/ui/jobs/{acme_job}").status_code == 200

    other = make_member(session, slug="globex")
    make_project(session, other, "secret")
    session.commit()
    client.cookies.clear()
    sign_in(client, researcher_of(session, other))
    for path in [*ADMIN_PAGES, f"/ui/jobs/{acme_job}", f"/ui/jobs/{acme_job}/files"]:
        assert client.get(path).status_code == 404, path
    listing = client.get("/ui/jobs")
    assert listing.status_code == 200 and acme_job not in listing.text
    # globex has no allocation: the API's quota refusal, shown in the form in the viewer's
    # language (French by default)
    status, page = submit_script(client, "globex/secret")
    assert status == 403, page
    assert 'class="error" role="alert"' in page
    # its amounts written as French writes numbers (the API's: `0.000 SU`)
    assert re.search(r"<li>Quota dépassé : demandé [0-9]+,[0-9]+ SU, disponible 0,0 SU, "
                     r"réservé 0,0 SU ", html.unescape(page)), page


@pytest.fixture
def own_job(client: TestClient, session: Session, member: Member) -> tuple[str, str]:
    """A researcher of `member` signed in (their email), and a job they submitted from the
    script form (its id)."""
    email = researcher_of(session, member)
    sign_in(client, email)
    status, job = submit_script(client, "acme/training")
    assert status == 303, job
    return email, job


def test_a_pending_jobs_page_gives_slurms_reason_in_the_viewers_language(
        client: TestClient, session: Session, own_job: tuple[str, str]) -> None:
    email, job = own_job
    for code, french, english in [
            ("Priority", "Des calculs plus prioritaires le précèdent dans la file d'attente.",
             "Jobs with a higher priority are ahead of this one in the queue."),
            ("QOSGrpNodeRunMinutes",
             "Une limite d'usage Node de sa QOS est atteinte : le calcul attend que davantage "
             "soit permis.",
             "A Node usage limit of its QOS is reached: the job waits until more is allowed.")]:
        session.execute(update(Job).where(Job.public_id == job).values(
            state=JobState.pending, pending_reason=code))
        speaks(session, email, "fr")
        assert french in html.unescape(client.get(f"/ui/jobs/{job}").text)
        speaks(session, email, "en")
        assert english in html.unescape(client.get(f"/ui/jobs/{job}").text)


def test_admin_onboards_a_member_invites_and_suspends_through_the_pages(
        client: TestClient, session: Session, member: Member) -> None:
    admin = make_user(session, admin=True)
    session.commit()
    sign_in(client, admin.email)
    for path in ADMIN_PAGES:
        assert client.get(path).status_code == 200, path
    page = client.get("/ui/admin/members")
    token = csrf_token(page.text)
    created = client.post("/ui/admin/members", data={
        "csrftoken": token, "slug": "initech", "name": "Initech", "kind": "company",
        "identities.0.cluster": "local", "identities.0.unix_user": "initech",
        "identities.0.slurm_account": "initech", "identities.0.ssh_key_ref": "local"},
        follow_redirects=False)
    assert created.status_code == 303, created.text
    refused = client.post("/ui/admin/members", data={
        "csrftoken": token, "slug": "Bad Slug", "name": "", "kind": "company"})
    assert refused.status_code == 422
    assert 'id="slug-error"' in refused.text and 'id="name-error"' in refused.text
    invited = client.post("/ui/admin/invitations/initech", data={
        "csrftoken": token, "email": "new@initech.test", "role": "manager"})
    assert invited.status_code == 200, invited.text
    link = re.search(r'id="invitation-link"[^>]*value="([^"]+)"', invited.text)
    assert link and "/ui/invitations/" in link.group(1)
    assert session.scalars(select(Invitation.email)).all() == ["new@initech.test"]
    suspended = client.post("/ui/admin/members/initech/status",
                            data={"csrftoken": token, "status": "suspended"},
                            follow_redirects=False)
    assert suspended.status_code == 303, suspended.text
    session.expire_all()
    status = session.scalars(select(Member.status).where(Member.slug == "initech")).one()
    assert status is MemberStatus.suspended


def test_a_form_posted_without_its_csrf_token_is_refused(
        client: TestClient, session: Session, member: Member) -> None:
    admin = make_user(session, admin=True)
    session.commit()
    sign_in(client, admin.email)
    answer = client.post("/ui/admin/members", data={"slug": "x", "name": "X"})
    assert answer.status_code == 403
    assert session.scalars(select(Member).where(Member.slug == "x")).first() is None


def test_a_jobs_page_says_the_gateways_details_in_the_viewers_language(
        client: TestClient, session: Session, own_job: tuple[str, str]) -> None:
    email, job = own_job
    scheduler_id = session.scalars(select(Job.scheduler_id).where(Job.public_id == job)).one()
    session.execute(update(Job).where(Job.public_id == job).values(
        detail="cluster unavailable: SchedulerUnavailable: ssh: Connection refused"))
    session.commit()
    for locale, submitted, unavailable in [
            ("fr", f"identifiant Slurm {scheduler_id}",
             "cluster injoignable : SchedulerUnavailable: ssh: Connection refused"),
            ("en", f"slurm id {scheduler_id}",
             "cluster unavailable: SchedulerUnavailable: ssh: Connection refused")]:
        speaks(session, email, locale)
        text = html.unescape(client.get(f"/ui/jobs/{job}").text)
        assert f" — {submitted}</li>" in text, text
        assert f'<p id="job-detail-text">{unavailable}</p>' in text, text
        # the timeline the page follows live says the same
        stream = client.get(f"/ui/jobs/{job}/events")
        events = [json.loads(line[len("data: "):]) for line in stream.text.splitlines()
                  if line.startswith("data: ")]
        assert submitted in [e["detail"] for e in events], events


@pytest.mark.parametrize(("stored", "french"), [
    ("tasks: 3 completed, 1 timeout",
     "tâches : 3 terminée(s), 1 arrêtée(s) à la durée limite"),
    ("Slurm held more than the gateway priced: cpus 4 > 1; cancelled (tasks: 2 cancelled)",
     "Slurm a réservé plus que ce que la passerelle avait chiffré : cpus 4 &gt; 1 ; annulé "
     "(tâches : 2 annulée(s))"),
])
def test_an_arrays_end_is_said_in_the_viewers_language(
        client: TestClient, session: Session, own_job: tuple[str, str], stored: str,
        french: str) -> None:
    email, job = own_job
    session.execute(update(Job).where(Job.public_id == job).values(detail=stored))
    session.commit()
    for locale, said in [("fr", french), ("en", stored.replace(">", "&gt;"))]:
        speaks(session, email, locale)
        page = client.get(f"/ui/jobs/{job}").text
        assert f'<p id="job-detail-text">{said}</p>' in page.replace("&#39;", "'"), page
