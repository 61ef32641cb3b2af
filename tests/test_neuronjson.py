"""neuronjson datatype: DVID's query semantics table-driven from DVID's own tests
(datatype/neuronjson/neuronjson_test.go, query_test.go), field stamps and show/fields,
POST update rules, versioning on every backend, bad input."""

from __future__ import annotations

import json
import re

import pytest

from diced.datatypes.neuronjson import query as Q
from diced.errors import InvalidArgumentError, LockedNodeError, MergeConflictError, NotFoundError

# DVID checkEndpoints() documents
VALUES = {
    1000: {"bodyid": 1000, "a string": "foo", "a number": 1234, "a list": [1, 2, 3]},
    2000: {"bodyid": 2000, "a string": "moo", "a number": 2345, "a list": ["mom", "pop"]},
    3000: {"bodyid": 3000, "a string": "goo", "a number": 3456, "a list": [23]},
}
# DVID TestFieldExistenceAndVersioning testData
TESTDATA = {
    1000: {"bodyid": 1000, "a number": 3456, "position": [150, 250, 380], "baz": ""},
    2000: {"bodyid": 2000, "bar": "another string", "baz": [1, 2, 3], "somefield": "im here"},
    3000: {"bodyid": 3000, "a number": 3456, "a list": [23], "somefield": ""},
    4000: {"position": [151, 251, 301], "bodyid": 4000, "soma_side": "LHS",
           "baz": "some string"},
}
# DVID query_test.go sampleData (a subset)
SAMPLE = {
    1000: {"bodyid": 1000, "position": [100, 101, 102], "class": "Interneuron (TBD)",
           "tags": ["group1"]},
    2000: {"bodyid": 2000, "position": [200, 201, 202], "class": "9A", "tags": ["group2"]},
    2001: {"bodyid": 2001, "position": [200, 111, 112], "class": "9A", "tags": ["group2"]},
    3000: {"bodyid": 3000, "position": [300, 301, 303], "class": "9B", "tags": ["group3"]},
    3003: {"bodyid": 3003, "position": [303, 301, 303], "class": "9B", "tags": ["group3"]},
}

CASES = [
    # (data set, query, expected body ids) -- DVID's expectations where DVID tests them
    (VALUES, {"a string": ["moo", "goo"]}, [2000, 3000]),
    (VALUES, {"a string": ["moo", "goo"], "a number": 2345}, [2000]),
    (VALUES, {"a string": ["moo", "goo"], "a number": [2345, 3456]}, [2000, 3000]),
    (VALUES, {"unused field": "foo"}, []),
    (VALUES, {"a string": "moo", "unused field": "foo"}, []),
    (VALUES, {"a string": "re/^(f|m)oo"}, [1000, 2000]),
    (VALUES, {"a string": "re/^(f|m)oo", "a list": "mom"}, [2000]),
    (VALUES, {"a string": "re/^(f|m)oo", "a list": ["re/.*x", "re/om"]}, [2000]),
    (VALUES, {"a list": 2}, [1000]),  # an int matches inside an int-list field
    (VALUES, {"a list": [23, 99]}, [3000]),
    (VALUES, {"a string": "re/oo$"}, [1000, 2000, 3000]),  # a search, not anchored
    (VALUES, {}, [1000, 2000, 3000]),
    (VALUES, [{"a number": 1234}, {"a string": "goo"}], [1000, 3000]),
    (VALUES, {"a number": True}, []),  # booleans are not a legal query value in DVID
    (VALUES, {"a number": None}, []),
    (TESTDATA, {"a number": "exists/0"}, [2000, 4000]),
    (TESTDATA, {"a number": "exists/1", "position": "exists/0"}, [3000]),
    (TESTDATA, {"somefield": "exists/0"}, [1000, 4000]),
    (TESTDATA, [{"baz": "exists/0"}, {"baz": ""}], [1000, 3000]),
    (TESTDATA, {"baz": 2}, [2000]),
    (SAMPLE, {"bodyid": [1000, 2000, 3000]}, [1000, 2000, 3000]),
    (SAMPLE, {"bodyid": 2000}, [2000]),
    (SAMPLE, [{"bodyid": [1000, 2000]}, {"bodyid": [3000]}], [1000, 2000, 3000]),
    (SAMPLE, {"bodyid": [3003], "position": [303, 301, 303]}, [3003]),
    (SAMPLE, {"class": "9A"}, [2000, 2001]),
    (SAMPLE, {"tags": "re/^group[12]"}, [1000, 2000, 2001]),
    (SAMPLE, {"class": ["re/^9", "Interneuron (TBD)"]}, [1000, 2000, 2001, 3000, 3003]),
]


@pytest.mark.parametrize(("data", "query", "expected"), CASES)
def test_query_semantics_table(data, query, expected):
    compiled = Q.compile_query(json.loads(json.dumps(query)))
    assert [b for b, d in sorted(data.items()) if Q.matches(compiled, d)] == expected




@pytest.fixture
def nj(repo):
    return repo.create_instance("neurons", "neuronjson")


STAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


def test_query_through_the_instance(nj):
    nj.post_many(list(TESTDATA.values()), user="tester")
    assert nj.keys() == [1000, 2000, 3000, 4000] and len(nj) == 4
    for data, query, expected in CASES:
        if data is TESTDATA:
            got = nj.query(query)
            assert [d["bodyid"] for d in got] == expected
            assert got == [TESTDATA[b] for b in expected]  # no stamps by default
            assert nj.query(query, onlyid=True) == expected
    got = nj.query({"a number": 3456}, show="user", fields=["position"])
    assert got == [{"bodyid": 1000, "position": [150, 250, 380], "position_user": "tester"},
                   {"bodyid": 3000}]
    with pytest.raises(InvalidArgumentError):
        nj.query([])
    with pytest.raises(InvalidArgumentError):
        nj.query({"a": "re/("})
    with pytest.raises(InvalidArgumentError):
        nj.query("a")
    with pytest.raises(InvalidArgumentError):
        nj.query({}, show="everything")


def test_stamps_show_and_fields(nj):
    stored = nj.post(1000, {"bodyid": 1000, "key1": "foo", "n": 1}, user="frank")
    assert stored["key1_user"] == "frank" and STAMP.match(stored["key1_time"])
    assert "bodyid_user" not in stored and "bodyid_time" not in stored
    assert nj.get(1000) == {"bodyid": 1000, "key1": "foo", "n": 1}
    assert set(nj.get(1000, show="user")) == {"bodyid", "key1", "n", "key1_user", "n_user"}
    assert set(nj.get(1000, show="time")) == {"bodyid", "key1", "n", "key1_time", "n_time"}
    assert len(nj.get(1000, show="all")) == 7
    assert nj.get(1000, fields=["n"], show="all") == {
        "bodyid": 1000, "n": 1, "n_user": "frank", "n_time": stored["n_time"]}
    # DVID TestKeyvalueUser: an explicit _user wins over the request's user
    nj.post(1000, {"key1": "moo", "key1_user": "frank"}, user="admin")
    assert nj.get(1000, show="user")["key1_user"] == "frank"
    # an unchanged value keeps its stamps; a changed one is restamped
    nj.post(1000, {"n": 1, "key1": "zoo"}, user="bob")
    got = nj.get(1000, show="user")
    assert (got["n_user"], got["key1_user"]) == ("frank", "bob")
    # null deletes and records the deleter; "field_user": null drops that stamp too
    nj.post(1000, {"key1": None}, user="deleter")
    assert nj.get(1000, show="user") == {"bodyid": 1000, "n": 1, "n_user": "frank",
                                         "key1_user": "deleter"}
    nj.post(1000, {"n": None, "n_user": None}, user="deleter")
    assert "n_user" not in nj.get(1000, show="user") and "n" not in nj.get(1000)
    # conditional: a field already set keeps its value
    nj.post(2000, {"status": "Traced", "comment": "a"}, user="u")
    nj.post(2000, {"status": "Anchor", "comment": "b"}, user="u", conditional=["status"])
    assert nj.get(2000) == {"bodyid": 2000, "status": "Traced", "comment": "b"}
    # replace drops fields not posted, keeps stamps of unchanged posted ones
    before = nj.get(2000, show="all")
    nj.post(2000, {"status": "Traced"}, user="v", replace=True)
    after = nj.get(2000, show="all")
    assert after == {"bodyid": 2000, "status": "Traced", "status_user": "u",
                     "status_time": before["status_time"]}
    assert nj.fields() == sorted(["bodyid", "key1_time", "key1_user", "n_time", "status",
                                  "status_user", "status_time"])
    assert nj.fields(counts=True)["bodyid"] == 2
    assert set(nj.fieldtimes()) == {"key1", "n", "status"}
    assert nj.get_many([2000, 5, "1000"]).keys() == {1000, 2000}
    assert 2000 in nj and 5 not in nj and "x" not in nj


def test_delete_and_bad_input(repo, nj):
    nj.post(7, {"a": 1}, user="u")
    for bad in [lambda: nj.post(7, {"a": 2}, user=""),
                lambda: nj.post(7, {"a": 2}, user=None),
                lambda: nj.post(-1, {"a": 2}, user="u"),
                lambda: nj.post(7, ["a"], user="u"),
                lambda: nj.post(7, {"bodyid": 8}, user="u"),
                lambda: nj.post(7, {"bodyid_user": "x"}, user="u"),
                lambda: nj.post(7, {"a": float("nan")}, user="u"),
                lambda: nj.post(7, {"a": object()}, user="u"),
                lambda: nj.post_many([{"a": 1}], user="u"),
                lambda: nj.post_many({7: {"a": 3}, 8: {"bodyid": 9}}, user="u"),
                lambda: nj.get("abc")]:
        with pytest.raises(InvalidArgumentError):
            bad()
    assert nj.get(7) == {"bodyid": 7, "a": 1} and 8 not in nj
    nj.delete(7)
    assert nj.get(7) is None and len(nj) == 0
    with pytest.raises(NotFoundError):
        nj.delete(7)
    with pytest.raises(NotFoundError):
        nj[7]
    root = repo.commit("root")
    with pytest.raises(LockedNodeError):
        repo.version(root.uuid)["neurons"].post(1, {"a": 1}, user="u")


def test_versioning_branch_merge_diff(repo, nj):
    nj.post_many({1: {"class": "a"}, 2: {"class": "b"}, 3: {"class": "c"}}, user="u")
    root = repo.commit("root")
    repo.branch("left")
    repo["neurons"].post(1, {"class": "L"}, user="l")
    repo["neurons"].post(4, {"class": "new"}, user="l")
    left = repo.commit("left")
    repo.branch("right", parent=root.uuid)
    repo["neurons"].delete(3)
    repo["neurons"].post(2, {"status": "R"}, user="r")
    right = repo.commit("right")
    assert repo.version(root.uuid)["neurons"].query({"class": "exists/1"}, onlyid=True) == [1, 2, 3]
    d = repo.diff(left.uuid, right.uuid)["neurons"]
    assert (d.added, d.removed, sorted(d.changed)) == ([], [3, 4], [1, 2])
    repo.merge(left.uuid, right.uuid)
    m = repo["neurons"]
    assert m.all() == [{"bodyid": 1, "class": "L"}, {"bodyid": 2, "class": "b", "status": "R"},
                       {"bodyid": 4, "class": "new"}]
    assert m.query({"class": ["L", "b"]}, onlyid=True) == [1, 2]
    merged = repo.commit("merged")
    repo.branch("x")
    repo["neurons"].post(1, {"class": "X"}, user="x")
    x = repo.commit("x")
    repo.branch("y", parent=merged.uuid)
    repo["neurons"].post(1, {"class": "Y"}, user="y")
    y = repo.commit("y")
    with pytest.raises(MergeConflictError) as exc:
        repo.merge(x.uuid, y.uuid)
    (c,) = exc.value.conflicts
    assert (c.instance, c.key) == ("neurons", 1)
    repo.merge(x.uuid, y.uuid, strategy=x.uuid)
    assert repo["neurons"][1]["class"] == "X"
    assert repo["neurons"].at(y.uuid)[1]["class"] == "Y"
