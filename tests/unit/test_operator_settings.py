"""Values that reach objects the operator creates are checked where they enter."""

from decimal import Decimal

import pytest

from tierwise.controller.settings import label_problems, quantity, resources_problems


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("500m", Decimal("0.5")),
        ("1", Decimal(1)),
        ("0.5", Decimal("0.5")),
        ("128Mi", Decimal(128 * 1024**2)),
        ("1Gi", Decimal(1024**3)),
        ("1G", Decimal(10**9)),
        ("1e3", Decimal(1000)),
        ("100k", Decimal(100_000)),
    ],
)
def test_quantities_read_as_kubernetes_reads_them(text: str, value: Decimal):
    assert quantity(text) == value


@pytest.mark.parametrize("text", ["", "abc", "1 Gi", "-1", "1GB", "1.2.3", "Mi"])
def test_point4_what_is_no_quantity_is_refused(text: str):
    with pytest.raises(ValueError, match="not a Kubernetes quantity"):
        quantity(text)


def test_point4_requests_above_limits_are_named():
    problems = resources_problems(
        {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"cpu": "1000m", "memory": "1G"}}
    )
    # 1 == 1000m is fine; 1Gi (1073741824) is more than 1G (1000000000).
    assert problems == ["requests.memory 1Gi is more than limits.memory 1G"]


def test_point4_unknown_parts_and_resource_names_are_named():
    problems = resources_problems({"request": {}, "limits": {"bad name": "1"}})
    assert "unknown field 'request'" in problems
    assert "limits: 'bad name' is not a resource name" in problems
    assert resources_problems({"limits": {"example.com/gpu": "1", "hugepages-2Mi": "4Mi"}}) == []


def test_point4_labels_that_are_no_labels_are_named():
    assert label_problems({"sidecar.istio.io/inject": "false", "team": ""}) == []
    [key] = label_problems({"bad key": "x"})
    assert "'bad key' is not a label key" in key
    [value] = label_problems({"mesh": "-x"})
    assert "mesh='-x'" in value
