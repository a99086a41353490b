"""A LOB's Activity page: its part of the audit trail, in the browser, for its admins.

Who may open it (the rule of the audit API), that it lists only its LOB's events, that each
filter narrows them and a filter that cannot be read is named and left out (never a 500), the
pages of 50, and that "Download CSV" hands the same filters to the API's export, which takes the
browser's session and answers only this LOB's rows.
"""

from __future__ import annotations

import csv
import io
import re
from datetime import UTC, datetime
from html import unescape

import pytest

from accounts.models import AuditEvent
from tests.page_tables import mislabelled_cells, stacked_tables
from tests.tenancy_world import PRINCIPALS, World, build_world, client_for

pytestmark = pytest.mark.django_db

URL = "/lobs/lob-a/activity/"


def record(day: int, action: str, lob: str = "lob-a", **fields: object) -> AuditEvent:
    """An event of March 2025 (noon UTC on that day): occurred_at is set on creation, so after."""
    event = AuditEvent.objects.create(action=action, lob_slug=lob, **fields)
    when = datetime(2025, 3, day, 12, tzinfo=UTC)
    AuditEvent.objects.filter(pk=event.pk).update(occurred_at=when)
    event.occurred_at = when
    return event


@pytest.fixture
def world() -> World:
    return build_world()


@pytest.fixture
def events(world: World) -> dict[str, AuditEvent]:
    """Four events of lob-a on the 1st, 5th, 10th and 15th, and one of lob-b."""
    return {
        "invoked": record(
            1,
            "subscription.invoked",
            outcome="success",
            actor_username="lob-a-analyst",
            target_type="subscription",
            target_id="41",
            detail={"status": 200, "duration_ms": 1234, "bytes_in": 2048, "bytes_out": 10},
        ),
        "added": record(
            5,
            "membership.created",
            outcome="success",
            actor_username="lob-a-admin",
            target_type="membership",
            target_id="7",
            detail={"after": {"user": "alice", "role": "analyst"}},
        ),
        "refused": record(
            10,
            "subscription.invoked",
            outcome="refused",
            actor_username="lob-a-viewer",
            target_type="subscription",
            target_id="41",
            reason="forbidden",
            detail={"status": 403},
        ),
        "updated": record(
            15,
            "lob.updated",
            outcome="failure",
            actor_username="platform-admin",
            target_type="lob",
            target_id="lob-a",
        ),
        "other_lob": record(
            12,
            "membership.created",
            lob="lob-b",
            outcome="success",
            actor_username="lob-b-analyst",
            target_type="membership",
            target_id="lob-b-only-target",
        ),
    }


def listed(response) -> list[str]:
    """The ids of the events the page lists, in the page's order."""
    assert response.status_code == 200, response.content[:500]
    return re.findall(r'data-testid="event-([0-9a-f-]{36})"', response.content.decode())


def ids(events: dict[str, AuditEvent], *names: str) -> list[str]:
    return [str(events[name].pk) for name in names]


def csv_rows(response) -> list[dict[str, str]]:
    """The rows of a streamed CSV answer."""
    assert response.status_code == 200, response
    assert response["Content-Type"].startswith("text/csv")
    return list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))


def csv_href(response) -> str:
    match = re.search(r'href="([^"]+)" data-testid="activity-csv"', response.content.decode())
    assert match, "no Download CSV link"
    return unescape(match.group(1))


# --- Who may see it -------------------------------------------------------------------------------

SEES = {
    "platform_admin": 200,
    "lob_admin": 200,
    "analyst": 403,  # a member, not an admin: the manager-only pages' 403
    "viewer": 403,
    "other_lob_member": 403,  # lob-b's admin: lob_scoped's "not a member" page, as the LOB page
    "non_member": 403,
    "anonymous": 302,
}


@pytest.mark.parametrize("principal", PRINCIPALS)
def test_only_platform_admins_and_the_lobs_admins_see_its_activity(
    world: World, events: dict[str, AuditEvent], principal: str
) -> None:
    response = client_for(world, principal).get(URL)

    assert response.status_code == SEES[principal]
    body = response.content.decode()
    if SEES[principal] == 200:
        assert listed(response) == ids(events, "updated", "refused", "added", "invoked")
    elif SEES[principal] == 403:
        assert 'data-testid="event-' not in body
        assert "subscription.invoked" not in body
        message = "You are not a member of" if principal.endswith("member") else "admins may"
        assert message in body
    else:
        assert response["Location"] == f"/login/?next={URL}"


def test_an_unknown_lob_is_the_404_page(world: World) -> None:
    response = client_for(world, "platform_admin").get("/lobs/no-such-lob/activity/")

    assert response.status_code == 404
    assert "There is no line of business called" in response.content.decode()


def test_a_lob_admin_sees_their_lobs_events_and_no_other_lobs(
    world: World, events: dict[str, AuditEvent]
) -> None:
    record(20, "membership.created", lob="", outcome="success", target_id="no-lob-target")

    response = client_for(world, "lob_admin").get(URL)

    body = response.content.decode()
    assert str(events["other_lob"].pk) not in listed(response)
    assert "lob-b-only-target" not in body
    assert "no-lob-target" not in body
    # Newest first, each with its time, actor, outcome, target and reason.
    row = body.split(f'data-testid="event-{events["refused"].pk}"', 1)[1].split("</tr>", 1)[0]
    assert "2025-03-10 12:00:00" in row
    assert "lob-a-viewer" in row
    assert '<span class="pill warn" data-testid="outcome">Refused</span>' in row
    assert "subscription" in row and "41" in row
    assert "forbidden" in row


def test_a_platform_admin_sees_the_events_of_an_inactive_lob(
    world: World, events: dict[str, AuditEvent]
) -> None:
    world.lob_a.is_active = False
    world.lob_a.save()

    assert client_for(world, "lob_admin").get(URL).status_code == 403
    assert len(listed(client_for(world, "platform_admin").get(URL))) == 4


def test_the_page_answers_get_only(world: World) -> None:
    assert client_for(world, "lob_admin").post(URL).status_code == 405


# --- What a row says ------------------------------------------------------------------------------


def test_a_calls_detail_reads_as_status_time_and_sizes(
    world: World, events: dict[str, AuditEvent]
) -> None:
    body = client_for(world, "lob_admin").get(URL).content.decode()

    assert "HTTP 200 · 1,234 ms · 2.0\xa0KB in · 10\xa0bytes out" in body
    assert "HTTP 403" in body


def test_other_details_read_as_key_value_pairs_cut_short_and_without_secrets(
    world: World,
) -> None:
    long_value = "x" * 300
    record(
        2,
        "lob.updated",
        outcome="success",
        detail={"before": {"name": "Old"}, "note": long_value, "Token": "sekrit-token-value"},
    )

    body = client_for(world, "lob_admin").get(URL).content.decode()

    assert "before={&quot;name&quot;:&quot;Old&quot;}, note=xxxxx" in body
    assert long_value not in body  # cut to a short value, the whole summary cut again
    assert "sekrit-token-value" not in body
    assert "Token=" not in body


# --- Filters --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({"action": "subscription."}, ("refused", "invoked")),
        ({"action": "membership.created"}, ("added",)),
        ({"outcome": "refused"}, ("refused",)),
        ({"outcome": "failure"}, ("updated",)),
        ({"actor": "lob-a-admin"}, ("added",)),
        ({"since": "2025-03-05"}, ("updated", "refused", "added")),
        ({"until": "2025-03-05"}, ("added", "invoked")),  # the whole day of "until" is in
        ({"since": "2025-03-05", "until": "2025-03-10"}, ("refused", "added")),
        ({"action": "subscription.invoked", "outcome": "success"}, ("invoked",)),
        ({"actor": "nobody-at-all"}, ()),
    ],
)
def test_each_filter_narrows_the_events(
    world: World, events: dict[str, AuditEvent], query: dict[str, str], expected: tuple[str, ...]
) -> None:
    response = client_for(world, "lob_admin").get(URL, query)

    assert listed(response) == ids(events, *expected)
    assert "filter-problems" not in response.content.decode()
    if not expected:
        assert "No event matches these filters." in response.content.decode()


def test_the_form_shows_the_filters_applied_and_offers_this_lobs_actions(
    world: World, events: dict[str, AuditEvent]
) -> None:
    response = client_for(world, "lob_admin").get(
        URL, {"action": "subscription.", "outcome": "refused", "actor": "lob-a-viewer"}
    )

    form = response.content.decode().split('data-testid="activity-filters"', 1)[1]
    form = form.split("</form>", 1)[0]
    actions = form.split('name="action"', 1)[1].split("</select>", 1)[0]
    assert re.findall(r'<option value="([^"]*)"', actions) == [
        "",
        "subscription.",  # the prefix the URL named, none of the choices: kept, chosen
        "lob.updated",
        "membership.created",
        "subscription.invoked",  # lob-a's actions only: lob-b's are not offered
    ]
    assert '<option value="subscription." selected>' in actions
    assert '<option value="refused" selected>' in form
    assert 'name="actor" value="lob-a-viewer"' in form


def test_a_family_of_several_actions_is_one_choice(world: World) -> None:
    record(1, "job.submitted", outcome="success")
    record(2, "job.cancelled", outcome="success")
    record(3, "lob.updated", outcome="success")
    client = client_for(world, "lob_admin")

    form = client.get(URL).content.decode().split('name="action"', 1)[1].split("</select>")[0]

    assert re.findall(r'<option value="([^"]*)">([^<]*)<', form) == [
        ("", "Any"),
        ("job.", "job.* (all 2)"),
        ("job.cancelled", "job.cancelled"),
        ("job.submitted", "job.submitted"),
        ("lob.updated", "lob.updated"),
    ]
    assert len(listed(client.get(URL, {"action": "job."}))) == 2


@pytest.mark.parametrize("principal", ["lob_admin", "platform_admin"])
def test_the_action_choices_and_filters_never_reach_another_lobs_events(
    world: World, principal: str
) -> None:
    record(1, "job.submitted", outcome="success")
    record(2, "job.cancelled", lob="lob-b", outcome="success", target_id="lob-b-job")
    record(3, "studio.open", lob="lob-b", outcome="success", target_id="lob-b-studio")
    client = client_for(world, principal)

    page = client.get(URL)
    form = page.content.decode().split('name="action"', 1)[1].split("</select>")[0]
    # lob-b's actions are not offered, nor counted in a family: job. has one action in lob-a.
    assert re.findall(r'<option value="([^"]*)">([^<]*)<', form) == [
        ("", "Any"),
        ("job.submitted", "job.submitted"),
    ]
    assert "lob-b" not in page.content.decode()
    for query in ({"action": "studio."}, {"action": "job.cancelled"}, {"lob": "lob-b"}):
        response = client.get(URL, query)
        names = {row["target_id"] for row in csv_rows(client.get(csv_href(response)))}
        assert "lob-b-job" not in response.content.decode(), query
        assert "lob-b-studio" not in response.content.decode(), query
        assert not names & {"lob-b-job", "lob-b-studio"}, query


@pytest.mark.parametrize(
    ("query", "problem"),
    [
        ({"outcome": "maybe"}, "Outcome “maybe” is not one of the outcomes."),
        ({"since": "yesterday"}, "“yesterday” is not a date (since)."),
        ({"until": "2025-02-30"}, "“2025-02-30” is not a date (until)."),
        ({"since": "99999-01-01"}, "“99999-01-01” is not a date (since)."),
    ],
)
def test_a_filter_that_cannot_be_read_is_named_and_left_out(
    world: World, events: dict[str, AuditEvent], query: dict[str, str], problem: str
) -> None:
    response = client_for(world, "lob_admin").get(URL, {**query, "actor": "lob-a-admin"})

    body = response.content.decode()
    assert 'data-testid="filter-problems"' in body
    assert problem in unescape(body)
    assert listed(response) == ids(events, "added")  # the other filter still applies
    href = csv_href(response)
    assert "actor=lob-a-admin" in href
    for name in query:
        assert f"{name}=" not in href


def test_the_last_day_there_is_sets_no_upper_bound(
    world: World, events: dict[str, AuditEvent]
) -> None:
    response = client_for(world, "lob_admin").get(URL, {"until": "9999-12-31"})

    assert len(listed(response)) == 4
    assert "until=" not in csv_href(response)


# --- Pages of 50 ----------------------------------------------------------------------------------


@pytest.fixture
def many(world: World) -> list[AuditEvent]:
    """120 of lob-a's events by lob-a-admin (newest last), and 5 by someone else."""
    made = [record(1 + n % 28, "job.submitted", outcome="success") for n in range(5)]
    AuditEvent.objects.filter(pk__in=[e.pk for e in made]).update(actor_username="someone")
    return [
        record(1 + n // 5, "job.submitted", outcome="success", actor_username="lob-a-admin")
        for n in range(120)
    ]


def test_events_come_fifty_a_page_and_page_links_keep_the_filters(
    world: World, many: list[AuditEvent]
) -> None:
    client = client_for(world, "lob_admin")

    first = client.get(URL, {"actor": "lob-a-admin"})
    assert len(listed(first)) == 50
    assert "Page 1 of 3 · 120 events" in first.content.decode()
    older = re.search(r'href="([^"]+)">Older', first.content.decode())
    assert older is not None
    assert unescape(older.group(1)) == "?actor=lob-a-admin&page=2"
    last = client.get(URL, {"actor": "lob-a-admin", "page": "3"})
    assert len(listed(last)) == 20
    seen = listed(first) + listed(client.get(URL, {"actor": "lob-a-admin", "page": "2"}))
    assert len(set(seen + listed(last))) == 120


@pytest.mark.parametrize(
    ("page", "number"),
    [("abc", 1), ("0", 3), ("-1", 3), ("999999", 3), ("1e999", 1), ("", 1), ("2.5", 1)],
)
def test_a_page_number_that_is_not_one_is_a_sensible_page(
    world: World, many: list[AuditEvent], page: str, number: int
) -> None:
    response = client_for(world, "lob_admin").get(URL, {"actor": "lob-a-admin", "page": page})

    assert response.status_code == 200
    assert response.context["page"].number == number
    assert len(listed(response)) == (20 if number == 3 else 50)


# --- Download CSV ---------------------------------------------------------------------------------


def test_download_csv_carries_the_filters_and_answers_this_lobs_rows_to_the_session(
    world: World, events: dict[str, AuditEvent]
) -> None:
    record(3, "subscription.invoked", lob="lob-b", outcome="success", target_id="lob-b-call")
    client = client_for(world, "lob_admin")
    query = {"action": "subscription.", "since": "2025-03-01", "until": "2025-03-10"}
    page = client.get(URL, query)

    href = csv_href(page)
    assert href.startswith("/api/v1/audit-events/export/?")
    assert "lob=lob-a" in href
    assert "action=subscription." in href
    assert "since=2025-03-01" in href
    assert "until=2025-03-11" in href  # the API's "until" is exclusive: the day after
    rows = csv_rows(client.get(href))  # the browser's session, no token

    assert {row["lob_slug"] for row in rows} == {"lob-a"}
    assert [row["id"] for row in rows] == listed(page) == ids(events, "refused", "invoked")


def test_download_csv_without_filters_is_the_whole_lob(
    world: World, events: dict[str, AuditEvent]
) -> None:
    client = client_for(world, "platform_admin")
    href = csv_href(client.get(URL))

    assert href == "/api/v1/audit-events/export/?lob=lob-a"
    rows = csv_rows(client.get(href))
    assert len(rows) == 4  # the platform admin sees lob-b too, but the link names lob-a


# --- The way there, and the table on a narrow screen ----------------------------------------------


@pytest.mark.parametrize("principal", ["platform_admin", "lob_admin", "analyst", "viewer"])
def test_the_lob_page_links_to_activity_only_for_those_who_may_see_it(
    world: World, principal: str
) -> None:
    body = client_for(world, principal).get("/lobs/lob-a/").content.decode()

    assert (f'href="{URL}"' in body) == (SEES[principal] == 200)


def test_every_cell_of_the_activity_table_names_its_column_for_narrow_screens(
    world: World, events: dict[str, AuditEvent]
) -> None:
    table = stacked_tables(client_for(world, "lob_admin").get(URL).content.decode())["activity"]

    assert len(table.rows) == 4
    assert [header for header, _ in table.headers] == [
        "Time (UTC)",
        "Actor",
        "Action",
        "Outcome",
        "Target",
        "Reason",
        "Detail",
    ]
    assert mislabelled_cells(table) == []


def test_targets_with_a_page_link_to_it_and_odd_ids_do_not(world: World) -> None:
    job_id = "5d3a9c1e-77aa-4f0e-9b1b-3c2d1e0f9a8b"
    record(1, "subscription.invoked", outcome="success", target_type="subscription", target_id="41")
    record(2, "job.submitted", outcome="success", target_type="job", target_id=job_id)
    record(3, "lob.updated", outcome="success", target_type="lob", target_id="lob-a")
    record(4, "membership.created", outcome="success", target_type="membership", target_id="7")
    # A refusal records what the caller named, whatever it was.
    record(
        5, "subscription.invoked", outcome="refused", target_type="subscription", target_id="x/../1"
    )

    body = client_for(world, "lob_admin").get(URL).content.decode()

    cells = re.findall(r'<td class="small" data-label="Target">(.*?)</td>', body)
    links = {
        text: unescape(href)
        for cell in cells
        for href, text in re.findall(r'<a class="mono" href="([^"]+)">([^<]+)</a>', cell)
    }
    assert len(cells) == 5
    assert links == {
        "41": "/subscriptions/41/",
        job_id: f"/jobs/{job_id}/",
        "lob-a": "/lobs/lob-a/",
    }
