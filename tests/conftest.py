import pytest

from bench.contract import RELATIONS


@pytest.fixture(params=RELATIONS)
def relation(request):
    return request.param
