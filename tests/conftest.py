import pytest

from scabench.bench.contract import FINITE_DTYPES, RELATIONS


@pytest.fixture(params=RELATIONS)
def relation(request):
    return request.param


@pytest.fixture(params=FINITE_DTYPES, ids=lambda dtype: str(dtype).removeprefix("torch."))
def dtype(request):
    """Every input dtype the loss contract checks: float32, float64, float16, bfloat16."""
    return request.param


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module: on small tensors the thread pool only adds contention."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
