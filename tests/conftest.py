import pytest

from scabench.bench.contract import RELATIONS


@pytest.fixture(params=RELATIONS)
def relation(request):
    return request.param
