"""Suite-wide settings: never reach a model hub, keep torch to the CI's two cores."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest
import torch

from cad_recode.geometry.sandbox import Sandbox


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny matrices: extra threads only add contention on a 2-core machine.

    Modules opt in with ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def sandbox():
    """One 1-worker sandbox shared by the tests (CadQuery starts once per run).

    Test modules that need their own limits or kill workers define a ``sandbox`` fixture of their own.
    """
    with Sandbox(workers=1) as box:
        yield box
