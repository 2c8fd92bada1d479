"""Property tests: Hypothesis generates hostile input for every API endpoint's query parameters,
path and body, and for the CSV parser and the upload page. Every one must be refused cleanly:
a 4xx answer with a JSON error (or the form's error, or ProspectInputError), and no change in
the database.

Runs are derandomized with a fixed number of examples per class, so the counts in docs/development.md's
table are reproducible; `tests/tally.py` counts them and the end of the run prints the table.
"""

from __future__ import annotations

import json
import re
import string
from typing import Any
from urllib.parse import quote_from_bytes

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client, override_settings
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qualifier.criteria import FIELD_NAMES
from qualifier.models import Prospect, ProspectResult
from qualifier.prospects import ProspectInputError, parse_csv
from recovery.conf import MAX_TIMEOUT_MINUTES
from recovery.models import QualificationRun, RecoveryEvent, RunStatus
from tests.helpers import CSRF_SECRET, DUMMY
from tests.tally import tried

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("_queued_tasks")]

API = "/api/qualify"
RECOVERY = f"{API}/recovery"


def examples(n: int) -> Any:
    return settings(
        max_examples=n,
        derandomize=True,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )


# --- strategies --------------------------------------------------------------------------------

#: Text PostgreSQL cannot store: a NUL or a lone surrogate somewhere.
UNSTORABLE = st.builds(
    lambda before, bad, after: before + bad + after,
    st.text(max_size=5),
    st.just("\x00") | st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF),
    st.text(max_size=5),
)
#: Digits of other scripts, superscripts, fractions: str.isdigit() says yes to many of them.
FOREIGN_DIGITS = st.text(
    st.characters(categories=["Nd", "No"], exclude_characters=string.digits),
    min_size=1,
    max_size=6,
)
JSON_LEAVES = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**40), max_value=10**40)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
ANY_JSON = st.recursive(
    JSON_LEAVES,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
NOT_TEXT = (
    st.booleans()
    | st.lists(JSON_LEAVES, max_size=3)
    | st.dictionaries(st.text(max_size=5), JSON_LEAVES, max_size=3)
)
_WHOLE = re.compile(r"[0-9]{1,3}(?:[,_ ][0-9]{3})+|[0-9]+")


def _not_whole(text: str) -> bool:
    return bool(text.strip()) and not _WHOLE.fullmatch(text.strip())


NOT_A_COUNT = (
    FOREIGN_DIGITS
    | st.text(min_size=1, max_size=12).filter(_not_whole)
    | st.integers(max_value=-1)
    | st.integers(min_value=2**31, max_value=10**300)
    | st.floats(allow_nan=False, allow_infinity=False).filter(lambda x: not x.is_integer())
    | NOT_TEXT
)
#: Query string values as raw bytes, percent-encoded: invalid UTF-8 and NULs included.
RAW_QUERY_VALUE = st.binary(max_size=24).map(quote_from_bytes)


def too_long(limit: int) -> Any:
    return st.integers(min_value=limit + 1, max_value=limit + 500).map(lambda n: "x" * n)


TEXT_FIELDS = {"name": 255, "company": 255, "email": 255, "title": 255, "industry": 255}
TEXT_FIELDS |= {"domain": 255, "website": 255, "country": 100}

HOSTILE_PROSPECT_FIELD = st.one_of(
    *(
        st.tuples(st.just(name), UNSTORABLE | too_long(limit) | NOT_TEXT)
        for name, limit in TEXT_FIELDS.items()
    ),
    st.tuples(st.sampled_from(["name", "company"]), st.sampled_from(["", "   ", None])),
    st.tuples(st.just("employees"), NOT_A_COUNT),
    st.tuples(UNSTORABLE, st.just("x")),  # a column name
    st.tuples(st.just("notes"), UNSTORABLE | too_long(1000)),  # an extra value
)

HOSTILE_LIST = (
    st.lists(st.text(max_size=5), max_size=3).flatmap(
        lambda items: st.builds(
            lambda bad: [*items, bad],
            UNSTORABLE
            | JSON_LEAVES.filter(lambda leaf: not isinstance(leaf, str) and leaf is not None)
            | too_long(255),
        )
    )
    | st.integers(min_value=501, max_value=800).map(lambda n: [f"k{i}" for i in range(n)])
    | too_long(10_000)
    | st.integers()
    | st.booleans()
    | st.dictionaries(st.text(max_size=3), JSON_LEAVES, max_size=2)
)
HOSTILE_CRITERION = st.one_of(
    st.tuples(st.sampled_from(["industries", "countries", "title_keywords"]), HOSTILE_LIST),
    st.tuples(
        st.sampled_from(["min_employees", "max_employees"]),
        NOT_A_COUNT.filter(lambda value: value != []),
    ),
    st.tuples(
        st.just("min_score"),
        FOREIGN_DIGITS | st.integers(min_value=101) | st.integers(max_value=-1) | NOT_TEXT,
    ),
    st.tuples(st.text(max_size=10).filter(lambda key: key not in FIELD_NAMES), JSON_LEAVES),
)

#: JSON does not tell 5.0 from 5 (nor does the OpenAPI document's `integer`): only numbers with
#: a fraction, and NaN and the infinities, are not whole numbers.
NOT_WHOLE_FLOATS = st.floats().filter(lambda number: not number.is_integer())
HOSTILE_RECOVERY_OPTION = st.one_of(
    st.tuples(
        st.just("timeout_minutes"),
        st.integers(max_value=0)
        | st.integers(min_value=MAX_TIMEOUT_MINUTES + 1, max_value=10**400)
        | st.text(max_size=8)
        | NOT_WHOLE_FLOATS
        | st.booleans()
        | st.lists(st.integers(), max_size=2),
    ),
    st.tuples(
        st.just("run_ids"),
        st.just([])
        | st.lists(st.integers(min_value=10**9, max_value=10**30), min_size=1, max_size=5)
        | st.lists(
            st.integers(max_value=0) | st.text(max_size=3) | NOT_WHOLE_FLOATS | st.booleans(),
            min_size=1,
            max_size=3,
        )
        | st.integers()
        | st.text(max_size=5),
    ),
    st.tuples(st.just("force"), JSON_LEAVES.filter(lambda value: not isinstance(value, bool))),
    st.tuples(
        st.text(max_size=10).filter(lambda key: key not in ("timeout_minutes", "run_ids", "force")),
        JSON_LEAVES,
    ),
)


# --- fixtures and checks -------------------------------------------------------------------------


@pytest.fixture
def _queued_tasks():
    with override_settings(TASKS=DUMMY):
        yield


@pytest.fixture
def world(alice, bob, make_run) -> dict[str, Any]:
    """Alice's runs (one completed with a result, one failed), Bob's run, and a stuck run, so
    that an input that slipped through would change something visible."""
    done = make_run(RunStatus.COMPLETED, user=alice)
    prospect = Prospect.objects.create(run=done, position=2, number=1, name="Ann", company="Acme")
    ProspectResult.objects.create(run=done, prospect=prospect, outcome="QUALIFIED", score=90)
    failed = make_run(RunStatus.FAILED, user=alice)
    Prospect.objects.create(run=failed, position=2, number=1, name="Bo", company="Beta")
    theirs = make_run(RunStatus.PENDING, user=bob)
    stuck = make_run(created_minutes_ago=600, started_minutes_ago=600)
    return {"done": done, "failed": failed, "theirs": theirs, "stuck": stuck}


@pytest.fixture
def api(alice) -> Client:
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)
    client.cookies["csrftoken"] = CSRF_SECRET
    return client


@pytest.fixture
def operator(db) -> Client:
    user = get_user_model().objects.create_user("operator", is_staff=True)
    user.user_permissions.set(Permission.objects.filter(codename="change_qualificationrun"))
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    client.cookies["csrftoken"] = CSRF_SECRET
    return client


def snapshot() -> tuple:
    return (
        list(QualificationRun.objects.order_by("pk").values_list("pk", "status", "completed")),
        Prospect.objects.count(),
        ProspectResult.objects.count(),
        RecoveryEvent.objects.count(),
    )


def refused_cleanly(
    kind: str, response: Any, before: tuple, statuses: range | tuple[int, ...]
) -> None:
    """Asserts the answer is a 4xx JSON error and nothing changed; counts the example."""
    is_json = response.get("Content-Type", "").startswith("application/json")
    ok = (
        response.status_code in statuses
        and is_json
        and isinstance(response.json().get("error"), str)
        and snapshot() == before
    )
    tried(kind, refused=ok)
    assert response.status_code in statuses, response.content[:500]
    assert is_json, response.content[:500]
    assert response.json()["error"]
    assert snapshot() == before


def post_json(client: Client, url: str, body: bytes | str) -> Any:
    return client.post(
        url, body, content_type="application/json", headers={"X-CSRFToken": CSRF_SECRET}
    )


# --- query parameters and paths ----------------------------------------------------------------


@examples(100)
@given(value=RAW_QUERY_VALUE.filter(lambda v: v not in RunStatus.values))
def test_runs_status_filter(api, world, value):
    before = snapshot()
    response = api.get(f"{API}/runs?status={value}")
    refused_cleanly("query: `status` (runs)", response, before, range(400, 401))


def _not_a_page(raw: str) -> bool:
    from urllib.parse import unquote_to_bytes

    text = unquote_to_bytes(raw)
    return not re.fullmatch(rb"\s*[0-9]{1,30}\s*", text) or int(text) < 1


@examples(100)
@given(value=RAW_QUERY_VALUE.filter(_not_a_page), where=st.sampled_from(["runs", "results"]))
def test_page_numbers(api, world, value, where):
    url = f"{API}/runs" if where == "runs" else f"{API}/runs/{world['done'].pk}/results"
    before = snapshot()
    response = api.get(f"{url}?page={value}")
    refused_cleanly("query: `page` (runs, results)", response, before, range(400, 401))


@examples(50)
@given(value=st.integers(min_value=2, max_value=10**29))
def test_pages_beyond_the_last_are_404(api, world, value):
    before = snapshot()
    response = api.get(f"{API}/runs/{world['done'].pk}/results?page={value}")
    refused_cleanly("query: `page` beyond the last page", response, before, range(404, 405))


@examples(100)
@given(value=RAW_QUERY_VALUE.filter(lambda v: v not in ("score", "-score", "%2Dscore")))
def test_results_sort(api, world, value):
    before = snapshot()
    response = api.get(f"{API}/runs/{world['done'].pk}/results?sort={value}")
    refused_cleanly("query: `sort` (results)", response, before, range(400, 401))


@examples(100)
@given(
    pk=st.integers(min_value=10**6, max_value=10**40) | st.just(None),
    endpoint=st.sampled_from(["", "/results", "/results.csv", "/continue"]),
)
def test_run_ids_in_paths_that_are_not_the_users(api, world, pk, endpoint):
    pk = world["theirs"].pk if pk is None else pk
    before = snapshot()
    url = f"{API}/runs/{pk}{endpoint}"
    response = post_json(api, url, "") if endpoint == "/continue" else api.get(url)
    refused_cleanly("path: another's or no run id", response, before, range(404, 405))


@examples(30)
@given(body=st.binary(max_size=40))
def test_retry_of_a_run_that_is_not_failed_whatever_the_body(api, world, body):
    before = snapshot()
    response = post_json(api, f"{API}/runs/{world['done'].pk}/continue", body)
    refused_cleanly("body: retry of a run that is not failed", response, before, range(409, 410))


def _not_a_timeout(raw: str) -> bool:
    from urllib.parse import unquote_to_bytes

    text = unquote_to_bytes(raw).strip()
    return not re.fullmatch(rb"[0-9]{1,30}", text) or not 1 <= int(text) <= MAX_TIMEOUT_MINUTES


@examples(100)
@given(
    value=RAW_QUERY_VALUE.filter(_not_a_timeout)
    | st.integers(min_value=MAX_TIMEOUT_MINUTES + 1, max_value=10**40).map(str)
    | FOREIGN_DIGITS.map(lambda text: quote_from_bytes(text.encode()))
)
def test_recovery_timeout_in_the_query(operator, world, value):
    before = snapshot()
    response = operator.get(f"{RECOVERY}?timeout_minutes={value}")
    refused_cleanly("query: `timeout_minutes` (recovery)", response, before, range(400, 401))


# --- bodies --------------------------------------------------------------------------------------


def _not_an_object(body: bytes) -> bool:
    """Recovery takes an empty body or an object of options: random bytes rarely are."""
    try:
        return bool(body.strip()) and not isinstance(json.loads(body), dict)
    except ValueError:
        return True


@examples(100)
@given(
    body=st.binary(min_size=1, max_size=60).filter(_not_an_object),
    url=st.sampled_from([f"{API}/runs", RECOVERY]),
)
def test_bodies_of_random_bytes(api, operator, world, body, url):
    client = api if url.endswith("/runs") else operator
    before = snapshot()
    response = post_json(client, url, body)
    refused_cleanly("body: random bytes (runs, recovery)", response, before, range(400, 414))


@examples(150)
@given(
    payload=ANY_JSON.filter(lambda value: not isinstance(value, dict))
    | st.dictionaries(st.text(max_size=10), ANY_JSON, max_size=3).filter(
        lambda body: not isinstance(body.get("prospects"), list) or not body["prospects"]
    )
)
def test_bodies_of_arbitrary_json_without_a_list_of_prospects(api, world, payload):
    before = snapshot()
    response = post_json(api, f"{API}/runs", json.dumps(payload))
    refused_cleanly("body: arbitrary JSON (runs)", response, before, range(400, 401))


@examples(200)
@given(field=HOSTILE_PROSPECT_FIELD, index=st.integers(min_value=0, max_value=2))
def test_one_hostile_prospect_field(api, world, field, index):
    key, value = field
    prospects = [{"name": "Ann", "company": "Acme", "employees": 120} for _ in range(3)]
    prospects[index][key] = value
    before = snapshot()
    response = post_json(api, f"{API}/runs", json.dumps({"prospects": prospects}))
    refused_cleanly("body: one hostile prospect field", response, before, range(400, 401))
    assert "Item" in response.json()["error"]


@examples(200)
@given(criterion=HOSTILE_CRITERION)
def test_one_hostile_criterion(api, world, criterion):
    key, value = criterion
    body = {"prospects": [{"name": "Ann", "company": "Acme"}], "criteria": {key: value}}
    before = snapshot()
    response = post_json(api, f"{API}/runs", json.dumps(body))
    refused_cleanly("body: one hostile criterion", response, before, range(400, 401))


@examples(200)
@given(option=HOSTILE_RECOVERY_OPTION, force=st.booleans())
def test_hostile_recovery_options(operator, world, option, force):
    key, value = option
    body = {key: value}
    if force and key != "force":
        body.setdefault("force", True)
    before = snapshot()
    response = post_json(operator, RECOVERY, json.dumps(body))
    # Ids that could exist but name no run are a 404, like a missing run anywhere in the API.
    refused_cleanly("body: hostile recovery options", response, before, (400, 404))


@examples(40)
@given(depth=st.integers(min_value=21, max_value=5000), url=st.sampled_from(["runs", "recovery"]))
def test_json_nested_too_deeply(api, operator, world, depth, url):
    client, target = (api, f"{API}/runs") if url == "runs" else (operator, RECOVERY)
    before = snapshot()
    response = post_json(client, target, '{"prospects": ' + "[" * depth + "]" * depth + "}")
    refused_cleanly("body: JSON nested too deeply", response, before, range(400, 401))


# --- the CSV parser and the upload page -----------------------------------------------------------


def hostile_csv() -> Any:
    header = ["name", "company", "employees", "notes"]
    good = ["Ann", "Acme", "120", "kept"]
    cell = st.one_of(
        st.tuples(st.sampled_from([0, 1, 3]), UNSTORABLE.filter(lambda t: "\x00" in t)),
        st.tuples(st.sampled_from([0, 1]), st.just("")),
        st.tuples(st.just(2), NOT_A_COUNT.filter(lambda v: isinstance(v, str))),
        st.tuples(st.just(0), too_long(255)),
        st.tuples(st.just(3), too_long(1000)),
    )

    def build(where: tuple[int, str], row: int, extra_columns: int) -> bytes:
        column, value = where
        rows = [list(good) for _ in range(3)]
        rows[row][column] = '"' + value.replace('"', '""') + '"'
        names = header + [f"x{i}" for i in range(extra_columns)]
        lines = [",".join(names)] + [",".join(r + [""] * extra_columns) for r in rows]
        return ("\n".join(lines) + "\n").encode("utf-8", "surrogatepass")

    too_many_columns = st.integers(min_value=50, max_value=300).map(
        lambda n: build((3, "kept"), 0, n)
    )
    not_utf8 = st.binary(min_size=1, max_size=4).map(
        lambda junk: b"name,company\nAnn,Acme\xff" + junk + b"\n"
    )
    return st.builds(build, cell, st.integers(0, 2), st.just(0)) | too_many_columns | not_utf8


@examples(300)
@given(data=hostile_csv())
def test_the_csv_parser_refuses_hostile_files(data):
    try:
        parse_csv(data)
    except ProspectInputError as exc:
        tried("CSV parser: one hostile cell, column count or byte", refused=bool(str(exc)))
    else:
        tried("CSV parser: one hostile cell, column count or byte", refused=False)
        pytest.fail(f"accepted {data[:200]!r}")


@examples(300)
@given(data=st.binary(max_size=200))
def test_the_csv_parser_never_raises_anything_else_on_random_bytes(data):
    try:
        prospects = parse_csv(data)
    except ProspectInputError:
        tried("CSV parser: random bytes", refused=True)
    else:
        tried("CSV parser: random bytes", refused=False)
        assert all(p.name and p.company for p in prospects)


@examples(60)
@given(data=hostile_csv())
def test_the_upload_page_shows_the_error_and_creates_nothing(client, alice, world, data):
    client.force_login(alice)
    before = snapshot()
    upload = SimpleUploadedFile("prospects.csv", data, content_type="text/csv")
    response = client.post("/runs/new/", {"prospects_file": upload})
    html = response.content.decode()
    ok = response.status_code == 200 and 'id="id_prospects_file_error"' in html
    ok = ok and snapshot() == before
    tried("upload page: hostile CSV file", refused=ok)
    assert response.status_code == 200
    assert 'id="id_prospects_file_error"' in html
    assert snapshot() == before
